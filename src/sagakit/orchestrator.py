"""The orchestrator: the state machine that drives saga instances, durably, against a store.

Every transition is written before the code it announces runs ("step started" before ``do``)
and after the code it reports finishes ("step succeeded" with its result). Writes are
coalesced: "step k succeeded" and "step k+1 started" are one transition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import replace
from typing import Final

import orjson

from sagakit.errors import BusinessKeyConflict, LeaseLost, SagaNotFound, StepFailed, UnknownSaga
from sagakit.handle import SagaHandle
from sagakit.records import (
    JSON,
    JSONObject,
    SagaEvent,
    SagaInstance,
    SagaStatus,
    StepRecord,
    StepStatus,
    Transition,
    new_id,
    now,
)
from sagakit.saga import Saga, Step, StepContext, WaitFor
from sagakit.store import open_store
from sagakit.store.base import SagaStore

logger = logging.getLogger("sagakit")

Sleep = Callable[[float], Awaitable[None]]
#: Told of every transition once it is durable: the instance as it now stands and the
#: events just recorded. Metrics, logs and traces listen here; the engine knows none of them.
Listener = Callable[[SagaInstance, Sequence[SagaEvent]], None]
#: Called at named points of the state machine (``before_do``, ``after_do``,
#: ``before_compensate``, ``after_compensate``; ``before_wait`` and ``after_wait`` around
#: parking a waiting step, ``after_signal`` once a signal is stored) with the step's (or
#: signal's) name; tests use it to crash.
Probe = Callable[[str, str], None]

DEFAULT_LEASE_SECONDS: Final = 15.0
#: Extra runs a step recorded as started gets when it is recovered after a crash, beyond
#: its retry policy: a crash is not the step's failure (DESIGN 1.2.5: it runs again).
CRASH_ALLOWANCE: Final = 1
#: The "deadline" of a step that waits for ever (epoch seconds, some million years away):
#: a parked saga is claimable only when its lease has passed, so it needs a finite one.
WAIT_FOREVER: Final = 1e14
#: How a ``failed`` saga's error begins.
COMPENSATION_FAILED: Final = "compensation of "

#: The step attempt (or compensation attempt) this task is running, ``None`` between steps:
#: log processors read it, so that every line a step logs names its saga, step and attempt.
current_step: ContextVar[StepContext | None] = ContextVar("sagakit_current_step", default=None)


def new_owner_id() -> str:
    """A name for this process that no other process, here or on another host, shares."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"


def _no_probe(point: str, step: str) -> None:
    """The default probe: do nothing."""


def _same_json(a: JSON, b: JSON) -> bool:
    """Whether ``a`` and ``b`` are one JSON value (as a store would give either back)."""
    return bool(orjson.loads(orjson.dumps(a)) == orjson.loads(orjson.dumps(b)))


def _describe(exc: BaseException) -> str:
    """A one-line description of an exception for the history."""
    if isinstance(exc, TimeoutError):
        return "step timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SagaOrchestrator:
    """Starts saga instances and drives them to an end, forward or backward."""

    def __init__(
        self,
        store: SagaStore,
        sagas: Iterable[Saga] = (),
        *,
        owner: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        sleep: Sleep = asyncio.sleep,
        probe: Probe | None = None,
        listeners: Iterable[Listener] = (),
    ) -> None:
        self.store = store
        self.owner = owner or new_owner_id()
        self.lease_seconds = lease_seconds
        self._sleep = sleep
        self._probe = probe or _no_probe
        self.listeners: list[Listener] = list(listeners)
        self._sagas: dict[tuple[str, int], Saga] = {}
        self._running: dict[str, asyncio.Task[SagaInstance]] = {}
        self._adopted: dict[str, int] = {}
        for saga in sagas:
            self.register(saga)

    @classmethod
    async def from_url(
        cls,
        url: str,
        sagas: Iterable[Saga] = (),
        *,
        owner: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        sleep: Sleep = asyncio.sleep,
        probe: Probe | None = None,
        listeners: Iterable[Listener] = (),
    ) -> SagaOrchestrator:
        """An orchestrator of ``sagas`` on the store that ``url`` names (see ``open_store``).

        The store is the orchestrator's own: :meth:`close` closes it.
        """
        store = await open_store(url)
        return cls(
            store,
            sagas,
            owner=owner,
            lease_seconds=lease_seconds,
            sleep=sleep,
            probe=probe,
            listeners=listeners,
        )

    async def close(self, grace: float = 5.0) -> None:
        """:meth:`shutdown`, then close the store."""
        try:
            await self.shutdown(grace)
        finally:
            await self.store.close()

    # -- definitions ---------------------------------------------------------------------

    def register(self, saga: Saga) -> None:
        """Make ``saga`` startable and resumable by this orchestrator."""
        self._sagas[(saga.name, saga.version)] = saga

    def definition(self, name: str, version: int | None = None) -> Saga:
        """The registered definition ``name`` (newest version unless one is named)."""
        if version is not None:
            found = self._sagas.get((name, version))
        else:
            versions = [s for (n, _), s in self._sagas.items() if n == name]
            found = max(versions, key=lambda s: s.version) if versions else None
        if found is None:
            raise UnknownSaga(self._unknown(name, version))
        return found

    def _unknown(self, name: str, version: int | None) -> str:
        known = sorted(v for (n, v) in self._sagas if n == name)
        if not known:
            return f"no saga named {name!r} is registered"
        listed = ", ".join(str(v) for v in known)
        return f"saga {name!r} has no version {version} (registered versions: {listed})"

    def knows(self, name: str, version: int) -> bool:
        """Whether this orchestrator can drive an instance of ``name`` at ``version``."""
        return (name, version) in self._sagas

    @property
    def sagas(self) -> tuple[Saga, ...]:
        """Every registered definition (each version of each)."""
        return tuple(self._sagas.values())

    # -- starting and waiting ------------------------------------------------------------

    async def start(
        self,
        name: str,
        input: JSONObject,
        *,
        business_key: str | None = None,
        saga_id: str | None = None,
        version: int | None = None,
    ) -> SagaHandle:
        """Start an instance of ``name`` and drive it in the background.

        The instance is pinned to ``version`` of the definition (the newest registered
        one unless named) for its whole life; an unregistered one raises ``UnknownSaga``
        and stores nothing.

        With a ``business_key``, an instance already active, completed or failed for that
        key is returned instead (``created`` is then false) and nothing new starts; if
        that instance was started with another ``input``, ``BusinessKeyConflict`` is
        raised. ``await handle.result()`` waits for the outcome.
        """
        saga = self.definition(name, version)
        first, *rest = saga.step_names
        head = StepRecord(
            index=0, name=first, status=StepStatus.RUNNING, attempts=1, started_at=now()
        )
        steps = (head, *(StepRecord(index=i, name=n) for i, n in enumerate(rest, start=1)))
        instance = SagaInstance(
            saga_id=saga_id or new_id(),
            name=saga.name,
            version=saga.version,
            status=SagaStatus.RUNNING,
            input=input,
            steps=steps,
            business_key=business_key,
            owner=self.owner,
            fence=1,
        )
        event = SagaEvent(type="saga_started", step=first, attempt=1)
        result = await self.store.start(instance, event, lease_seconds=self.lease_seconds)
        if result.created:
            self.notify(result.instance, (event,))
            self.drive(result.instance, fresh=True)
        elif not _same_json(result.instance.input, input):
            raise BusinessKeyConflict(
                f"business key {business_key!r} of saga {name!r} was started with another input"
                f" (saga {result.instance.saga_id})"
            )
        return SagaHandle(instance=result.instance, created=result.created, orchestrator=self)

    def notify(self, instance: SagaInstance, events: Sequence[SagaEvent]) -> None:
        """Tell every listener about a durable transition; a failing listener is logged."""
        for listener in self.listeners:
            try:
                listener(instance, events)
            except Exception:
                logger.exception("saga listener %r failed", listener)

    async def wait(self, saga_id: str, timeout: float | None = None) -> SagaInstance:
        """The instance once it has ended, or as it stands when ``timeout`` runs out."""
        try:
            async with asyncio.timeout(timeout):
                return await self._wait_for_end(saga_id)
        except TimeoutError:
            current = await self.store.get(saga_id)
            if current is None:
                raise SagaNotFound(f"no saga {saga_id!r}") from None
            return current

    async def _wait_for_end(self, saga_id: str) -> SagaInstance:
        delay = 0.01
        while True:
            task = self._running.get(saga_id)
            if task is not None:
                # A lost lease (or a crashed driver) means another process or a later
                # recovery finishes it: read the store instead.
                with contextlib.suppress(LeaseLost, Exception):
                    driven = await asyncio.shield(task)
                    if not driven.status.is_active:
                        return driven
                    # Parked, waiting for a signal: whoever resumes it finishes it.
            current = await self.store.get(saga_id)
            if current is None:
                raise SagaNotFound(f"no saga {saga_id!r}")
            if not current.status.is_active:
                return current
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    # -- driving -------------------------------------------------------------------------

    def drive(self, instance: SagaInstance, *, fresh: bool = False) -> asyncio.Task[SagaInstance]:
        """Drive ``instance`` (which this orchestrator must own) in a background task.

        ``fresh`` says the first step's start was just recorded by :meth:`start`, so its
        first attempt runs without another write.
        """
        existing = self._running.get(instance.saga_id)
        if existing is not None and not existing.done():
            return existing
        task = asyncio.create_task(self._drive(instance, fresh), name=f"saga-{instance.saga_id}")
        self._running[instance.saga_id] = task
        task.add_done_callback(lambda t: self._forget(instance.saga_id, t))
        return task

    def _forget(self, saga_id: str, task: asyncio.Task[SagaInstance]) -> None:
        if self._running.get(saga_id) is task:
            del self._running[saga_id]
            self._adopted.pop(saga_id, None)
        if not task.cancelled() and isinstance(task.exception(), LeaseLost):
            logger.warning("saga %s: lease lost, another process drives it now", saga_id)
        elif not task.cancelled() and task.exception() is not None:
            logger.error("saga %s: driver crashed", saga_id, exc_info=task.exception())

    @property
    def driving(self) -> frozenset[str]:
        """The ids of the instances this orchestrator is driving right now."""
        return frozenset(self._running)

    async def _drive(self, instance: SagaInstance, fresh: bool) -> SagaInstance:
        saga = self.definition(instance.name, instance.version)
        while True:
            run = _Run(self, saga, instance)
            if run.status is SagaStatus.RUNNING:
                await (run.run_from(0) if fresh else run.forward())
            if run.status is SagaStatus.COMPENSATING:
                await run.backward()
            waiting = run.parked
            if waiting is None:
                return run.instance
            self._probe("after_wait", waiting.name)
            # A signal stored before we parked did not wake the saga (we held it then): look
            # again, now that a later one would. Whoever claims it first drives it on.
            if waiting.signal in await self.store.signals(instance.saga_id):
                await self.store.wake(instance.saga_id)
            claimed = await self.store.claim(
                instance.saga_id, owner=self.owner, lease_seconds=self.lease_seconds
            )
            if claimed is None:
                return run.instance
            instance, fresh = claimed, False

    async def signal(self, saga_id: str, name: str, payload: JSON = None) -> bool:
        """Deliver the external signal ``name`` with ``payload`` to the saga ``saga_id``.

        It is stored durably first (a signal that arrives before the saga waits for it is
        kept; a duplicate changes nothing), then the saga is resumed here if no process
        holds it. Returns whether the signal was new. Raises ``SagaNotFound``, or
        ``InvalidTransition`` when the saga is not running.
        """
        event = SagaEvent(type="signal_received", detail=name)
        new = await self.store.add_signal(saga_id, name, payload, event)
        if new:
            current = await self.store.get(saga_id)
            if current is not None:
                self.notify(current, (event,))
        self._probe("after_signal", name)
        await self.resume(saga_id)
        return new

    async def resume(self, saga_id: str) -> bool:
        """Claim ``saga_id`` if nobody holds it and drive it; whether it was claimed.

        An instance of a definition (name and version) this orchestrator lacks is left
        alone, for a process that has it.
        """
        current = await self.store.get(saga_id)
        if current is None or not self.knows(current.name, current.version):
            return False
        claimed = await self.store.claim(
            saga_id, owner=self.owner, lease_seconds=self.lease_seconds
        )
        if claimed is None:
            return False
        await self._note_recovery(claimed)
        return True

    async def recover(self, limit: int = 100) -> int:
        """Claim and drive up to ``limit`` instances whose driver went away.

        Only instances of the definitions (name and version) registered here are claimed.
        """
        claimed = await self.store.claim_expired(
            owner=self.owner,
            lease_seconds=self.lease_seconds,
            limit=limit,
            definitions=tuple(self._sagas),
        )
        for instance in claimed:
            await self._note_recovery(instance)
        return len(claimed)

    async def _note_recovery(self, instance: SagaInstance) -> None:
        task = self._running.get(instance.saga_id)
        if task is not None and not task.done():
            # Our own driver let its lease lapse (a long step, a slow store) and we claimed
            # the saga back: hand it the new fence instead of starting a second driver.
            self._adopted[instance.saga_id] = instance.fence
            return
        logger.info("saga %s: recovered (%s)", instance.saga_id, instance.status)
        self.notify(instance, (SagaEvent(type="saga_claimed", detail=f"claimed by {self.owner}"),))
        self.drive(instance)

    async def retry(self, saga_id: str, *, actor: str = "operator") -> SagaInstance:
        """Resume the compensation of a ``failed`` instance (an operator's action)."""
        event = SagaEvent(type="operator_retry", detail=f"retry requested by {actor}")
        instance = await self.store.reopen(
            saga_id, event, owner=self.owner, lease_seconds=self.lease_seconds
        )
        self.notify(instance, (event,))
        self.drive(instance)
        return instance

    async def cancel(self, saga_id: str, *, actor: str = "operator") -> SagaInstance:
        """Ask a ``running`` instance to stop and compensate what it did (an operator's action).

        Its driver, wherever it runs, sees the request at its next recorded transition.
        """
        event = SagaEvent(type="operator_cancel", detail=f"cancel requested by {actor}")
        instance = await self.store.request_cancel(saga_id, event)
        self.notify(instance, (event,))
        return instance

    async def resolve(self, saga_id: str, *, actor: str = "operator", reason: str) -> SagaInstance:
        """Mark a ``failed`` instance ``compensated`` by hand, recording who and why."""
        event = SagaEvent(type="operator_resolved", detail=f"resolved by {actor}: {reason}")
        instance = await self.store.resolve(saga_id, event)
        self.notify(instance, (event,))
        return instance

    async def renew_leases(self) -> int:
        """Extend the leases of every instance this orchestrator drives."""
        if not self._running:
            return 0
        # Only what a live task drives: the lease of a saga whose driver died must lapse,
        # so that recovery (here or elsewhere) picks it up again.
        return await self.store.renew(
            owner=self.owner, lease_seconds=self.lease_seconds, saga_ids=list(self._running)
        )

    async def shutdown(self, grace: float = 5.0) -> None:
        """Let running instances finish for up to ``grace`` seconds, then hand them back."""
        tasks = list(self._running.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.store.release(owner=self.owner)


class _Steps(list[StepRecord]):
    """The step rows of one run, remembering which ones changed since the last write."""

    def __init__(self, records: Iterable[StepRecord]) -> None:
        super().__init__(records)
        self.dirty: set[int] = set()

    def __setitem__(self, index: int, record: StepRecord) -> None:  # type: ignore[override]
        super().__setitem__(index, record)
        self.dirty.add(index)

    def restore(self, saved: tuple[list[StepRecord], set[int]]) -> None:
        """Go back to a state saved as ``(list(steps), set(steps.dirty))``."""
        records, dirty = saved
        list.__setitem__(self, slice(None), records)
        self.dirty = set(dirty)

    def take_changed(self) -> tuple[StepRecord, ...]:
        """The rows changed since the last call, in step order."""
        changed = tuple(self[i] for i in sorted(self.dirty))
        self.dirty.clear()
        return changed


class _Run:
    """One drive of one instance: holds its latest state and writes its transitions.

    The state is kept in plain attributes and turned into a frozen ``SagaInstance`` only
    when someone needs one (listeners, the caller at the end): the hot path stays cheap.
    """

    def __init__(self, orchestrator: SagaOrchestrator, saga: Saga, instance: SagaInstance):
        self.orch = orchestrator
        self.saga = saga
        self.origin = instance
        self.saga_id = instance.saga_id
        self.steps = _Steps(instance.steps)
        self.status = instance.status
        self.error = instance.error
        self.failed_step = instance.failed_step
        self.fence = instance.fence
        self.updated_at = instance.updated_at
        self.released = False
        self.cancel_requested = instance.cancel_requested
        #: The step this run parked the saga at (it waits for that step's signal).
        self.parked: WaitFor | None = None
        self.park_until: float | None = None

    @property
    def instance(self) -> SagaInstance:
        """The instance as it now stands."""
        return self.origin.evolve(
            status=self.status,
            steps=tuple(self.steps),
            error=self.error,
            failed_step=self.failed_step,
            fence=self.fence,
            updated_at=self.updated_at,
            owner=None if self.released or self.parked else self.origin.owner,
            lease_until=self.park_until if self.parked else self.lease_until_now(),
            cancel_requested=self.cancel_requested,
        )

    def lease_until_now(self) -> float | None:
        return None if self.released else self.origin.lease_until

    # -- writing -------------------------------------------------------------------------

    async def write(
        self,
        *events: SagaEvent,
        status: SagaStatus | None = None,
        error: str | None = None,
        failed_step: str | None = None,
        local: tuple[object, int] | None = None,
        park_until: float | None = None,
    ) -> None:
        """Persist the current step rows that changed, and the saga's new status.

        With ``local`` (a local action and its step's index), the action runs in the same
        transaction and its result becomes that step's result. With ``park_until``, the
        lease is given up until then (a step waits for a signal).
        """
        new_status = status or self.status
        change = Transition(
            saga_id=self.saga_id,
            fence=self.fence,
            status=new_status,
            steps=self.steps.take_changed(),
            events=events,
            error=error if error is not None else self.error,
            failed_step=failed_step if failed_step is not None else self.failed_step,
            release=not new_status.is_active,
            park_until=park_until,
        )
        try:
            cancel = await self._apply(change, local)
        except LeaseLost:
            adopted = self.orch._adopted.pop(change.saga_id, None)
            if adopted is None or adopted <= change.fence:
                raise
            self.fence = adopted
            cancel = await self._apply(replace(change, fence=adopted), local)
        self.cancel_requested = self.cancel_requested or cancel
        self.status = new_status
        self.error = change.error
        self.failed_step = change.failed_step
        self.updated_at = change.at
        self.released = change.release
        if self.orch.listeners:
            self.orch.notify(self.instance, events)

    async def _apply(self, change: Transition, local: tuple[object, int] | None) -> bool:
        if local is None:
            return await self.orch.store.transition(change)
        action, index = local
        cancel, result = await self.orch.store.transition_with(change, action, index)
        # Already written with the transition: not a change for the next write.
        list.__setitem__(self.steps, index, self.steps[index].evolve(result=result))
        return cancel

    def context(self, index: int, attempt: int) -> StepContext:
        record = self.steps[index]
        return StepContext(
            saga_id=self.saga_id,
            saga_name=self.origin.name,
            step=record.name,
            input=self.origin.input,
            results={s.name: s.result for s in self.steps[:index] if s.result is not None},
            idempotency_key=f"{self.saga_id}:{record.name}",
            attempt=attempt,
            result=record.result,
        )

    async def call(
        self, step: Step, ctx: StepContext, action: Callable[[StepContext], Awaitable[JSON]]
    ) -> JSON:
        token = current_step.set(ctx)
        try:
            async with asyncio.timeout(step.timeout):
                return await action(ctx)
        finally:
            current_step.reset(token)

    # -- forward -------------------------------------------------------------------------

    async def forward(self) -> None:
        """Run the remaining actions in order, each until it succeeds or fails for good."""
        index = next(
            (i for i, s in enumerate(self.steps) if s.status is not StepStatus.SUCCEEDED), None
        )
        if index is None:
            await self.write(SagaEvent(type="saga_completed"), status=SagaStatus.COMPLETED)
            return
        record = self.steps[index]
        if record.attempts and isinstance(self.saga.steps[index], WaitFor):
            # Waiting is not an attempt: resumed (by a signal, a deadline or a crash), the
            # step looks for its signal again, with the deadline it started with.
            await self.run_from(index)
            return
        if record.attempts == 0:
            self.steps[index] = record.evolve(
                status=StepStatus.RUNNING, attempts=record.attempts + 1, started_at=now()
            )
            await self.write(SagaEvent(type="step_started", step=record.name, attempt=1))
        elif not self.saga.steps[index].retry.can_retry(record.attempts - CRASH_ALLOWANCE):
            # Recovered with every attempt (and the crash allowance) spent: a step that kills
            # its process every time must end, so its outcome is treated as unknown.
            await self.give_up(index, record.error or "attempts exhausted before a crash")
            return
        else:
            attempt = record.attempts + 1
            self.steps[index] = record.evolve(attempts=attempt)
            await self.write(SagaEvent(type="step_started", step=record.name, attempt=attempt))
        await self.run_from(index)

    async def run_from(self, index: int) -> None:
        """Run attempts from step ``index`` on, whose start is already recorded."""
        while self.status is SagaStatus.RUNNING and self.parked is None:
            if self.cancel_requested:
                await self.cancel(index)
                return
            index = await self.attempt(index)

    async def cancel(self, index: int) -> None:
        """An operator cancelled: compensate from the step about to run, whose state is unknown."""
        record = self.steps[index]
        self.steps[index] = record.evolve(status=StepStatus.COMPENSATING, finished_at=now())
        message = "cancelled by an operator"
        event = SagaEvent(type="saga_cancelled", step=record.name, detail=message)
        await self.begin_compensation(event, message, record.name)

    async def attempt(self, index: int) -> int:
        """Run the recorded attempt of step ``index``; return the step to run next."""
        step = self.saga.steps[index]
        if isinstance(step, WaitFor):
            return await self.wait_for(index, step)
        record = self.steps[index]
        ctx = self.context(index, record.attempts)
        self.orch._probe("before_do", step.name)
        action = step.local_action(ctx, self.orch.store)
        if action is not None:
            return await self.attempt_locally(index, action)
        try:
            result = await self.call(step, ctx, step.do)
        except StepFailed as exc:
            await self.reject(index, exc.message)
            return index
        except Exception as exc:  # transient or unknown: the retry policy decides
            await self.failed_attempt(index, _describe(exc))
            return index
        self.orch._probe("after_do", step.name)
        try:
            orjson.dumps(result)
        except TypeError as exc:
            # A programming error, but the action ran: treat its effect as unknown.
            await self.failed_attempt(index, f"result is not JSON-serialisable: {exc}")
            return index
        return await self.succeed(index, result)

    async def wait_for(self, index: int, step: WaitFor) -> int:
        """Take step ``index``'s signal if it came; else give up past the deadline, or park."""
        record = self.steps[index]
        signals = await self.orch.store.signals(self.saga_id)
        if step.signal in signals:
            return await self.succeed(index, signals[step.signal])
        started = record.started_at if record.started_at is not None else now()
        deadline = WAIT_FOREVER if step.deadline is None else started + step.deadline
        if now() >= deadline:
            await self.give_up(index, f"no signal {step.signal!r} within {step.deadline}s")
            return index
        self.orch._probe("before_wait", step.name)
        self.steps[index] = record.evolve(status=StepStatus.WAITING)
        detail = f"waiting for signal {step.signal!r}"
        event = SagaEvent(type="step_waiting", step=step.name, detail=detail)
        await self.write(event, park_until=deadline)
        self.parked, self.park_until = step, deadline
        return index

    async def attempt_locally(self, index: int, action: object) -> int:
        """Run a local action in the transaction that records its success."""
        step = self.saga.steps[index]
        saved = list(self.steps), set(self.steps.dirty)
        try:
            following = await self.succeed(index, None, local=action)
        except StepFailed as exc:
            self.steps.restore(saved)
            await self.reject(index, exc.message)
            return index
        except Exception as exc:  # transient or unknown: nothing was applied
            self.steps.restore(saved)
            await self.failed_attempt(index, _describe(exc))
            return index
        self.orch._probe("after_do", step.name)
        return following

    async def succeed(self, index: int, result: JSON, *, local: object | None = None) -> int:
        """Record step ``index`` as succeeded and the next one as started, in one write."""
        record = self.steps[index]
        self.steps[index] = record.evolve(
            status=StepStatus.SUCCEEDED, result=result, error=None, finished_at=now()
        )
        events = [SagaEvent(type="step_succeeded", step=record.name, attempt=record.attempts)]
        with_action = None if local is None else (local, index)
        if index + 1 == len(self.steps):
            events.append(SagaEvent(type="saga_completed"))
            await self.write(*events, status=SagaStatus.COMPLETED, local=with_action)
            return index
        following = self.steps[index + 1]
        self.steps[index + 1] = following.evolve(
            status=StepStatus.RUNNING, attempts=following.attempts + 1, started_at=now()
        )
        events.append(SagaEvent(type="step_started", step=following.name, attempt=1))
        await self.write(*events, local=with_action)
        return index + 1

    async def reject(self, index: int, message: str) -> None:
        """A business rejection: this step applied nothing; undo the ones before it."""
        record = self.steps[index]
        self.steps[index] = record.evolve(
            status=StepStatus.FAILED, error=message, finished_at=now()
        )
        event = SagaEvent(
            type="step_failed", step=record.name, attempt=record.attempts, detail=message
        )
        await self.begin_compensation(event, message, record.name)

    async def failed_attempt(self, index: int, message: str) -> None:
        step = self.saga.steps[index]
        record = self.steps[index]
        if not step.retry.can_retry(record.attempts):
            await self.give_up(index, message)
            return
        delay = step.retry.delay(record.attempts)
        self.steps[index] = record.evolve(attempts=record.attempts + 1, error=message)
        await self.write(
            SagaEvent(
                type="step_retry",
                step=record.name,
                attempt=record.attempts,
                detail=f"{message}; attempt {record.attempts + 1} in {delay:.3f}s",
            )
        )
        await self.orch._sleep(delay)

    async def give_up(self, index: int, message: str) -> None:
        """Retries ran out: the step's effect is unknown, so it is compensated too."""
        record = self.steps[index]
        self.steps[index] = record.evolve(
            status=StepStatus.COMPENSATING, error=message, finished_at=now()
        )
        event = SagaEvent(
            type="step_exhausted", step=record.name, attempt=record.attempts, detail=message
        )
        await self.begin_compensation(event, message, record.name)

    async def begin_compensation(self, event: SagaEvent, error: str, failed_step: str) -> None:
        if any(s.status.needs_compensation for s in self.steps):
            await self.write(
                event,
                SagaEvent(type="compensation_started", step=failed_step),
                status=SagaStatus.COMPENSATING,
                error=error,
                failed_step=failed_step,
            )
        else:
            await self.write(
                event,
                SagaEvent(type="saga_compensated", detail=error),
                status=SagaStatus.COMPENSATED,
                error=error,
                failed_step=failed_step,
            )

    # -- backward ------------------------------------------------------------------------

    async def backward(self) -> None:
        """Compensate every step that may have applied, newest first."""
        for index in reversed(range(len(self.steps))):
            if self.steps[index].status.needs_compensation and not await self.undo(index):
                return
        reason = await self.reason_for_compensating()
        await self.write(
            SagaEvent(type="saga_compensated", detail=reason),
            status=SagaStatus.COMPENSATED,
            error=reason,
        )

    async def reason_for_compensating(self) -> str | None:
        """Why the saga went backward, even after a failed compensation overwrote its error."""
        if not (self.error or "").startswith(COMPENSATION_FAILED):
            return self.error
        # Resumed by an operator after it failed: the reason is in the history.
        for event in reversed(await self.orch.store.events(self.saga_id)):
            if event.type in ("step_failed", "step_exhausted", "saga_cancelled"):
                return event.detail
        return self.error

    async def undo(self, index: int) -> bool:
        """Compensate step ``index`` until it succeeds (True) or its policy runs out."""
        step = self.saga.steps[index]
        while True:
            record = self.steps[index]
            attempt = record.compensation_attempts + 1
            self.steps[index] = record.evolve(
                status=StepStatus.COMPENSATING, compensation_attempts=attempt
            )
            await self.write(
                SagaEvent(type="compensation_attempt", step=step.name, attempt=attempt)
            )
            self.orch._probe("before_compensate", step.name)
            try:
                await self.call(step, self.context(index, attempt), step.compensate)
            except Exception as exc:  # compensations are retried whatever failed
                if not await self.compensation_failed(index, _describe(exc)):
                    return False
                continue
            self.orch._probe("after_compensate", step.name)
            logger.info("saga %s: compensated step %s", self.saga_id, step.name)
            self.steps[index] = self.steps[index].evolve(
                status=StepStatus.COMPENSATED, finished_at=now()
            )
            await self.write(
                SagaEvent(type="compensation_succeeded", step=step.name, attempt=attempt)
            )
            return True

    async def compensation_failed(self, index: int, message: str) -> bool:
        """Record a failed compensation; whether another attempt is allowed."""
        step = self.saga.steps[index]
        record = self.steps[index]
        self.steps[index] = record.evolve(error=message)
        attempt = record.compensation_attempts
        if step.compensation_retry.can_retry(attempt):
            delay = step.compensation_retry.delay(attempt)
            detail = f"{message}; attempt {attempt + 1} in {delay:.3f}s"
            await self.write(
                SagaEvent(type="compensation_retry", step=step.name, attempt=attempt, detail=detail)
            )
            await self.orch._sleep(delay)
            return True
        logger.error(
            "saga %s: compensation of %s failed for good: %s",
            self.saga_id,
            step.name,
            message,
        )
        await self.write(
            SagaEvent(type="compensation_failed", step=step.name, attempt=attempt, detail=message),
            SagaEvent(type="saga_failed", step=step.name, detail=message),
            status=SagaStatus.FAILED,
            error=f"{COMPENSATION_FAILED}{step.name} failed: {message}",
        )
        return False
