"""The orchestrator: starts saga instances, claims abandoned ones, and hands each to a
``SagaRun`` (``run.py``) that drives it durably against a store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import orjson

from sagakit.errors import BusinessKeyConflict, LeaseLost, SagaNotFound, UnknownSaga
from sagakit.handle import SagaHandle
from sagakit.records import (
    JSON,
    JSONObject,
    SagaEvent,
    SagaInstance,
    SagaStatus,
    StartResult,
    StepRecord,
    StepStatus,
    new_id,
    now,
)

# Sleep, Clock, Listener and Probe are the engine's: defined beside the run that uses them
# and exported from here, where users have always found them.
from sagakit.run import Clock as Clock
from sagakit.run import Collaborators, SagaRun
from sagakit.run import Listener as Listener
from sagakit.run import Probe as Probe
from sagakit.run import Sleep as Sleep
from sagakit.saga import Saga, Step
from sagakit.store import open_store
from sagakit.store.base import SagaStore
from sagakit.unit import BACKWARD, LocalUnit, fits

if TYPE_CHECKING:
    from pydantic import BaseModel

logger = logging.getLogger("sagakit")

DEFAULT_LEASE_SECONDS: Final = 15.0


def new_owner_id() -> str:
    """A name for this process that no other process, here or on another host, shares."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"


def _no_probe(point: str, step: str) -> None:
    """The default probe: do nothing."""


def _same_json(a: JSON, b: JSON) -> bool:
    """Whether ``a`` and ``b`` are one JSON value (as a store would give either back)."""
    return bool(orjson.loads(orjson.dumps(a)) == orjson.loads(orjson.dumps(b)))


def _may_be_local(step: Step) -> bool:
    """Whether ``step`` may offer a local action: it does not keep ``Step``'s own, which
    never does (so a saga starting with it has nothing to run as one unit)."""
    return getattr(step.local_action, "__func__", None) is not Step.local_action


def _wake(waiter: asyncio.Future[None], *_: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _wake_all(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        _wake(waiter)


async def _until(future: asyncio.Future[Any], deadline: float | None) -> bool:
    """Wait until ``future`` is done (never cancelling it) or the loop's clock reaches
    ``deadline``; whether it is done."""
    if future.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    wake = partial(_wake, waiter)
    future.add_done_callback(wake)
    timer = None if deadline is None else loop.call_at(deadline, wake)
    try:
        await waiter
    finally:
        future.remove_done_callback(wake)
        if timer is not None:
            timer.cancel()
    return future.done()


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
        clock: Clock = now,
        probe: Probe | None = None,
        listeners: Iterable[Listener] = (),
        one_unit: bool | None = None,
    ) -> None:
        self.store = store
        self.owner = owner or new_owner_id()
        self.lease_seconds = lease_seconds
        self._sleep = sleep
        #: Where the engine reads the time for steps' starts and ends and for deadlines (a
        #: test's ``FakeClock.time`` makes deadlines pass without waiting).
        self.clock = clock
        self._probe = probe or _no_probe
        #: Run a saga whose steps are all local as one transaction (``sagakit.unit``). By
        #: default only without a probe: crash tests at a step's points test the
        #: per-transition writes, unless they ask for the unit.
        self.one_unit = probe is None if one_unit is None else one_unit
        self.listeners: list[Listener] = list(listeners)
        self._sagas: dict[tuple[str, int], Saga] = {}
        #: The newest registered version of each name.
        self._newest: dict[str, Saga] = {}
        #: Each registered definition's step rows before it starts (all pending).
        self._pending: dict[tuple[str, int], tuple[StepRecord, ...]] = {}
        #: The registered definitions whose shape fits one unit (``sagakit.unit.fits``) and
        #: whose first step may have a local action (its class defines ``local_action``).
        self._fits: set[tuple[str, int]] = set()
        self._running: dict[str, asyncio.Task[SagaInstance]] = {}
        #: The run each live driver task is on (its fence and revision say what it wrote).
        self._runs: dict[str, SagaRun] = {}
        #: Callers of :meth:`wait` for a saga nobody drives here, woken when a driver starts.
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        #: Claims of our own we handed to a live driver: saga id -> (fence, revision claimed).
        self._adopted: dict[str, tuple[int, int]] = {}
        #: What each run works with: it owns these rather than reading this object.
        self._collaborators = Collaborators(
            store=store,
            clock=clock,
            sleep=sleep,
            probe=self._probe,
            listeners=self.listeners,
            notify=self.notify,
            adoption=self.adoption,
        )
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

    @classmethod
    def connect(
        cls,
        url: str,
        sagas: Iterable[Saga] = (),
        *,
        poll_seconds: float = 1.0,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        grace: float = 5.0,
        listeners: Iterable[Listener] = (),
    ) -> contextlib.AbstractAsyncContextManager[SagaOrchestrator]:
        """``async with SagaOrchestrator.connect(url, sagas) as orchestrator:`` opens the store
        and runs a worker beside the block: lease renewal, and every ``poll_seconds`` the
        recovery of sagas whose process died (once their lease expired), retries, timers and
        deadlines. On the way out the worker stops, running sagas get up to ``grace`` seconds
        to finish, the others are handed back, and the store is closed.
        """
        from sagakit.lifecycle import connected

        return connected(
            cls,
            url,
            sagas,
            poll_seconds=poll_seconds,
            lease_seconds=lease_seconds,
            grace=grace,
            listeners=listeners,
        )

    async def run(self, *, poll_seconds: float = 1.0) -> None:
        """Run only the worker (lease renewal, recovery, timers) until cancelled."""
        from sagakit.lifecycle import run_worker

        await run_worker(self, poll_seconds)

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
        self._pending[(saga.name, saga.version)] = tuple(
            StepRecord(index=i, name=n) for i, n in enumerate(saga.step_names)
        )
        newest = self._newest.get(saga.name)
        if newest is None or newest.version <= saga.version:
            self._newest[saga.name] = saga
        if fits(saga) and _may_be_local(saga.steps[0]):
            self._fits.add((saga.name, saga.version))
        else:
            self._fits.discard((saga.name, saga.version))

    def definition(self, name: str, version: int | None = None) -> Saga:
        """The registered definition ``name`` (newest version unless one is named)."""
        found = self._newest.get(name) if version is None else self._sagas.get((name, version))
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
        input: JSONObject | BaseModel,
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
        raised. ``await handle.result()`` waits for the outcome. A typed saga's ``input`` (a
        model, or a dict) is validated first: ``InvalidInput`` is raised, and nothing stored,
        when it does not fit.
        """
        saga = self.definition(name, version)
        input = saga.input_json(input)
        first = saga.step_names[0]
        started = self.clock()
        # Every member of the first group starts with the saga (a parallel group starts whole);
        # the other rows are the definition's pending ones (frozen records, shared).
        opening = saga.groups[0]
        pending = self._pending[(saga.name, saga.version)]
        steps = (
            *(
                StepRecord(
                    index=i,
                    name=pending[i].name,
                    status=StepStatus.RUNNING,
                    attempts=1,
                    started_at=started,
                )
                for i in opening
            ),
            *pending[len(opening) :],
        )
        saga_id = saga_id or new_id()
        at = now()
        instance = SagaInstance(
            saga_id=saga_id,
            name=saga.name,
            version=saga.version,
            status=SagaStatus.RUNNING,
            input=input,
            steps=steps,
            business_key=business_key,
            owner=self.owner,
            fence=1,
            created_at=at,
            updated_at=at,
        )
        event = SagaEvent(type="saga_started", step=first, attempt=1, at=at)
        if self.one_unit and (saga.name, saga.version) in self._fits:
            result = await self._start_unit(saga, instance, event)
        else:
            result = await self._start_driven(saga, instance, event)
        if not result.created and not _same_json(result.instance.input, input):
            raise BusinessKeyConflict(
                f"business key {business_key!r} of saga {name!r} was started with another input"
                f" (saga {result.instance.saga_id})"
            )
        return SagaHandle(instance=result.instance, created=result.created, orchestrator=self)

    async def _start_driven(
        self, saga: Saga, instance: SagaInstance, event: SagaEvent
    ) -> StartResult:
        """Start ``instance`` (its first step's start recorded), then drive it in a task."""
        result = await self.store.start(
            instance,
            event,
            lease_seconds=self.lease_seconds,
            outbox=saga.opening_messages(instance.saga_id, instance.input) if saga.senders else (),
        )
        if result.created:
            self.notify(result.instance, (event,))
            self.drive(result.instance, start_at=0, saga=saga)
        return result

    async def _start_unit(
        self, saga: Saga, instance: SagaInstance, event: SagaEvent
    ) -> StartResult:
        """Start ``instance`` and run as much of it as is local in the same transaction."""
        unit = LocalUnit(saga, instance, self.store, self.clock, self._probe)
        if not unit.opens_locally():
            # Its first step is not local here: the unit would stop before it; start it the
            # ordinary way, without a plan.
            return await self._start_driven(saga, instance, event)
        result = await self.store.start_unit(
            instance, event, lease_seconds=self.lease_seconds, plan=unit.plan()
        )
        if not result.created:
            return result
        if not unit.finished:  # the store rolled the unit back: drive it the ordinary way
            self.notify(result.instance, (event,))
            self.drive(result.instance, start_at=0, saga=saga)
            return result
        current = unit.instance(result.instance)
        self.notify(current, (event, *unit.events))
        unit.tell_compensated()
        if unit.resume_at is not None:
            start_at = None if unit.resume_at == BACKWARD else unit.resume_at
            self.drive(current, start_at=start_at, delay=unit.delay, saga=saga)
        return StartResult(instance=current, created=True)

    def notify(self, instance: SagaInstance, events: Sequence[SagaEvent]) -> None:
        """Tell every listener about a durable transition; a failing listener is logged."""
        for listener in self.listeners:
            try:
                listener(instance, events)
            except Exception:
                logger.exception("saga listener %r failed", listener)

    async def wait(self, saga_id: str, timeout: float | None = None) -> SagaInstance:
        """The instance once it has ended, or as it stands when ``timeout`` runs out.

        A saga this process drives is waited for on its driver's task: no store read, no
        poll. One driven elsewhere (another process, or parked until a signal or a
        deadline) is read from the store, again whenever a driver of this process takes it
        up, and otherwise after a delay that doubles up to a quarter of a second.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay = 0.01
        while True:
            task = self._running.get(saga_id)
            if task is not None:
                if not await _until(task, deadline):
                    return await self._current(saga_id)  # out of time
                if self._running.get(saga_id) not in (None, task):
                    continue  # a stale driver was replaced by a fresh one: wait for that
                # A lost lease (or a crashed driver) means another process or a later
                # recovery finishes it; a parked saga, whoever resumes it: read the store.
                if not task.cancelled():
                    error = task.exception()
                    if error is None and not (driven := task.result()).status.is_active:
                        return driven
                    if error is not None and not isinstance(error, Exception | LeaseLost):
                        raise error  # the process "died" (a test's simulated crash)
            current = await self._current(saga_id)
            if not current.status.is_active or (deadline is not None and loop.time() >= deadline):
                return current
            if saga_id in self._running:
                continue  # a driver of ours took it up while we read
            # Woken as soon as a driver of ours takes it up (drive() wakes waiters).
            driven_here: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(saga_id, []).append(driven_here)
            until = loop.time() + delay
            try:
                await _until(driven_here, until if deadline is None else min(until, deadline))
            finally:
                waiters = self._waiters.get(saga_id)
                if waiters is not None and driven_here in waiters:
                    waiters.remove(driven_here)
                    if not waiters:
                        del self._waiters[saga_id]
            delay = min(delay * 2, 0.25)

    async def _current(self, saga_id: str) -> SagaInstance:
        current = await self.store.get(saga_id)
        if current is None:
            raise SagaNotFound(f"no saga {saga_id!r}")
        return current

    # -- driving -------------------------------------------------------------------------

    def drive(
        self,
        instance: SagaInstance,
        *,
        start_at: int | None = None,
        delay: float = 0.0,
        saga: Saga | None = None,
    ) -> asyncio.Task[SagaInstance]:
        """Drive ``instance`` (which this orchestrator must own) in a background task.

        ``start_at`` names a step whose start was just recorded (by :meth:`start`), so its
        first attempt runs without another write; otherwise the drive resumes from the
        stored state, as after a crash. ``delay`` is a retry's backoff, waited first.
        ``saga`` is ``instance``'s definition, when the caller has it at hand.
        """
        existing = self._running.get(instance.saga_id)
        if existing is not None and not existing.done():
            return existing
        if saga is None:
            saga = self.definition(instance.name, instance.version)
        saga_id = instance.saga_id
        task = asyncio.create_task(
            self._drive(saga, instance, start_at, delay), name=f"saga-{saga_id}"
        )
        self._running[saga_id] = task
        task.add_done_callback(lambda t: self._forget(saga_id, t))
        waiters = self._waiters.pop(saga_id, None)
        if waiters is not None:  # somebody waits for this saga: let them wait for this driver
            _wake_all(waiters)
        return task

    def _forget(self, saga_id: str, task: asyncio.Task[SagaInstance]) -> None:
        if self._running.get(saga_id) is task:
            del self._running[saga_id]
            self._runs.pop(saga_id, None)
            self._adopted.pop(saga_id, None)
        if not task.cancelled() and isinstance(task.exception(), LeaseLost):
            logger.warning(
                "saga %s: lease lost, another process drives it now",
                saga_id,
                extra={"saga_id": saga_id},
            )
        elif not task.cancelled() and task.exception() is not None:
            logger.error(
                "saga %s: driver crashed",
                saga_id,
                exc_info=task.exception(),
                extra={"saga_id": saga_id},
            )

    @property
    def driving(self) -> frozenset[str]:
        """The ids of the instances this orchestrator is driving right now."""
        return frozenset(self._running)

    async def _drive(
        self, saga: Saga, instance: SagaInstance, start_at: int | None, delay: float = 0.0
    ) -> SagaInstance:
        if delay:
            await self._sleep(delay)
        while True:
            run = SagaRun(self._collaborators, saga, instance)
            self._runs[instance.saga_id] = run
            if run.status is SagaStatus.RUNNING:
                await (run.forward() if start_at is None else run.run_from(start_at))
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
            instance, start_at = claimed, None

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
        saga_id = instance.saga_id
        task = self._running.get(saga_id)
        if task is not None and not task.done():
            if self._may_adopt(instance):
                # Our own driver let its lease lapse (a long step, a slow store, a stall)
                # and nobody else held the saga since: hand it the new fence instead of
                # starting a second driver. Its next write goes on under that fence.
                self._adopted[saga_id] = (instance.fence, instance.revision)
                return
            # Somebody else moved the saga on meanwhile (or our driver has parked it): what
            # our driver holds in memory is stale. Stop it before it writes again.
            self._stop_stale(saga_id, task)
        logger.info(
            "saga %s: recovered (%s)",
            saga_id,
            instance.status,
            extra={"saga_id": saga_id, "saga": instance.name},
        )
        self.notify(instance, (SagaEvent(type="saga_claimed", detail=f"claimed by {self.owner}"),))
        self.drive(instance)

    def _may_adopt(self, claimed: SagaInstance) -> bool:
        """Whether our live driver of ``claimed`` may go on: the fence moved by exactly our
        claim, and the stored state is the one that driver last wrote."""
        run = self._runs.get(claimed.saga_id)
        if run is None or run.parked is not None or run.revoked:
            return False
        fence, revision = self._adopted.get(claimed.saga_id, (run.fence, run.revision))
        return claimed.fence == fence + 1 and claimed.revision == run.revision == revision

    def _stop_stale(self, saga_id: str, task: asyncio.Task[SagaInstance]) -> None:
        """Revoke a stale driver (it can write nothing more) and cancel its task."""
        run = self._runs.pop(saga_id, None)
        if run is not None:
            run.revoked = True
        self._adopted.pop(saga_id, None)
        del self._running[saga_id]
        task.cancel()
        logger.warning(
            "saga %s: stopped a stale driver; driving from the stored state",
            saga_id,
            extra={"saga_id": saga_id},
        )

    def adoption(self, saga_id: str, revision: int) -> int | None:
        """The fence a driver whose write at ``revision`` was refused may go on with: the
        one of our own later claim, if that claim found the saga at ``revision``."""
        offer = self._adopted.pop(saga_id, None)
        if offer is None or offer[1] != revision:
            return None
        return offer[0]

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
        # A saga parked on a WaitFor has no driver to see the request: make it claimable now,
        # so that a worker (or resume) drives it into its compensation.
        await self.store.wake(saga_id)
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
