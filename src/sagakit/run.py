"""One drive of one saga instance: the state machine, forward and backward.

``SagaOrchestrator`` starts, claims and hands out instances; a ``SagaRun`` drives one of them
to its end (or until it parks, or loses its lease). Every transition is written before the
code it announces runs ("step started" before ``do``) and after the code it reports
finishes ("step succeeded" with its result); "step k succeeded" and "step k+1 started" are
one write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Final, TypeVar

import orjson

from sagakit.errors import LeaseLost, StepFailed
from sagakit.records import (
    JSON,
    OutboxMessage,
    Outgoing,
    SagaEvent,
    SagaInstance,
    SagaStatus,
    StepRecord,
    StepStatus,
    Transition,
)
from sagakit.saga import Saga, Step, StepContext, WaitFor, idempotency_key
from sagakit.saga import Sleep as SleepStep

if TYPE_CHECKING:
    from sagakit.store.base import SagaStore

logger = logging.getLogger("sagakit")

T = TypeVar("T")

#: Extra runs a step recorded as started gets when it is recovered after a crash, beyond
#: its retry policy: a crash is not the step's failure (docs/semantics.md, guarantee 5).
CRASH_ALLOWANCE: Final = 1
#: The "deadline" of a step that waits for ever (epoch seconds, some million years away):
#: a parked saga is claimable only when its lease has passed, so it needs a finite one.
WAIT_FOREVER: Final = 1e14
#: How a ``failed`` saga's error begins.
COMPENSATION_FAILED: Final = "compensation of "
#: The step attempt (or compensation attempt) this task is running, ``None`` between steps:
#: log processors read it, so that every line a step logs names its saga, step and attempt.
current_step: ContextVar[StepContext | None] = ContextVar("sagakit_current_step", default=None)


def describe(exc: BaseException) -> str:
    """A one-line description of an exception for the history."""
    if isinstance(exc, TimeoutError):
        return "step timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Expiry:
    """Cancels a task when its deadline comes (and remembers that it did)."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()


class Deadlines:
    """The step attempts' timeouts of one orchestrator, on one timer of its event loop.

    ``asyncio.timeout`` (or ``loop.call_later``) arms and disarms a timer of the loop for
    every attempt: the largest cost of a step that does little. Here an attempt's deadline
    is an entry in a queue per duration (every attempt of a step has the same one, so each
    queue is in deadline order), removed when the attempt ends; one timer, armed for the
    earliest deadline, expires the entries that are due and is armed again for the next.
    On another loop than the one it first ran on, a timer per attempt is used instead.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[float, dict[_Expiry, float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    def add(self, seconds: float, expiry: _Expiry) -> Callable[[], object]:
        """Call ``expiry`` in ``seconds`` unless the function returned, which removes the
        deadline, is called first."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            return loop.call_later(seconds, expiry).cancel
        at = loop.time() + seconds
        queue = self._queues.get(seconds)
        if queue is None:
            queue = self._queues[seconds] = {}
        queue[expiry] = at
        if at < self._timer_at:
            self._arm(at)
        return partial(queue.pop, expiry, None)

    def _arm(self, at: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = self._loop.call_at(at, self._expire), at

    def _expire(self) -> None:
        assert self._loop is not None
        self._timer, self._timer_at = None, float("inf")
        now = self._loop.time()
        earliest = float("inf")
        due: list[_Expiry] = []
        for queue in self._queues.values():
            for expiry, at in queue.items():
                if at > now:
                    earliest = min(earliest, at)
                    break
                due.append(expiry)
        for expiry in due:
            for queue in self._queues.values():
                queue.pop(expiry, None)
        for expiry in due:
            expiry()
        if earliest < float("inf"):
            self._arm(earliest)


async def within(
    seconds: float,
    awaitable: Awaitable[T],
    deadlines: Deadlines,
    task: asyncio.Task[object] | None = None,
) -> T:
    """``await awaitable``, raising ``TimeoutError`` if it takes more than ``seconds``.

    What ``async with asyncio.timeout(seconds)`` does (this task is cancelled at the
    deadline, and that cancellation becomes ``TimeoutError``), without a timer of its own.
    ``task`` is the task running this (looked up when not given).
    """
    if task is None:
        task = asyncio.current_task()
    if task is None:
        raise RuntimeError("within() must run inside a task")
    cancelling = task.cancelling()
    expiry = _Expiry(task)
    remove = deadlines.add(seconds, expiry)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if expiry.fired:
            expiry.fired = False
            if task.uncancel() <= cancelling:
                raise TimeoutError from None
        raise
    finally:
        remove()
        if expiry.fired:  # it expired, yet the awaitable ended anyway: forget our cancel
            task.uncancel()


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


class StepRows(list[StepRecord]):
    """The step rows of one run, remembering which ones changed since the last write."""

    def __init__(self, records: Iterable[StepRecord]) -> None:
        super().__init__(records)
        self.dirty: set[int] = set()

    def __setitem__(self, index: int, record: StepRecord) -> None:  # type: ignore[override]
        super().__setitem__(index, record)
        self.dirty.add(index)

    def save(self, indices: Iterable[int]) -> dict[int, tuple[StepRecord, bool]]:
        """The rows ``indices`` as they stand, and whether each is dirty, for :meth:`restore`."""
        return {i: (self[i], i in self.dirty) for i in indices}

    def restore(self, saved: dict[int, tuple[StepRecord, bool]]) -> None:
        """Put back the rows :meth:`save` saved (other rows, a sibling's, are left alone)."""
        for index, (record, dirty) in saved.items():
            list.__setitem__(self, index, record)
            if dirty:
                self.dirty.add(index)
            else:
                self.dirty.discard(index)

    def take_changed(self) -> tuple[StepRecord, ...]:
        """The rows changed since the last call, in step order."""
        changed = tuple(self[i] for i in sorted(self.dirty))
        self.dirty.clear()
        return changed


Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
#: Told of every transition once it is durable: the instance as it now stands and the
#: events just recorded. Metrics, logs and traces listen here; the engine knows none of them.
Listener = Callable[[SagaInstance, Sequence[SagaEvent]], None]
#: Called at named points of the state machine (``before_do``, ``after_do``,
#: ``before_compensate``, ``after_compensate``; ``before_wait`` and ``after_wait`` around
#: parking a waiting step, ``after_signal`` once a signal is stored) with the step's (or
#: signal's) name; tests use it to crash.
Probe = Callable[[str, str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Collaborators:
    """What every run of one orchestrator works with, handed over once by the orchestrator."""

    store: SagaStore
    clock: Clock
    sleep: Sleep
    probe: Probe
    #: The orchestrator's listeners (the list itself: a listener added later is told too).
    listeners: Sequence[Listener]
    #: Tells the listeners about a durable transition.
    notify: Callable[[SagaInstance, Sequence[SagaEvent]], None]
    #: The fence a driver whose write was refused may go on with (the orchestrator's own
    #: later claim of the saga), or ``None``.
    adoption: Callable[[str, int], int | None]
    #: The timeouts of every step attempt, on one timer.
    deadlines: Deadlines = field(default_factory=lambda: Deadlines())


class SagaRun:
    """One drive of one instance: holds its latest state and writes its transitions.

    The state is kept in plain attributes and turned into a frozen ``SagaInstance`` only
    when someone needs one (listeners, the caller at the end): the hot path stays cheap.
    """

    def __init__(self, collaborators: Collaborators, saga: Saga, instance: SagaInstance):
        self.store = collaborators.store
        self.clock = collaborators.clock
        self.sleep = collaborators.sleep
        self.probe = collaborators.probe
        self.listeners = collaborators.listeners
        self.notify = collaborators.notify
        self.adoption = collaborators.adoption
        self.deadlines = collaborators.deadlines
        #: The task this run was made in, which drives it (``None`` outside a task).
        self.task: asyncio.Task[object] | None = _current_task()
        self.saga = saga
        self.origin = instance
        self.saga_id = instance.saga_id
        self.steps = StepRows(instance.steps)
        self.status = instance.status
        self.error = instance.error
        self.failed_step = instance.failed_step
        self.fence = instance.fence
        #: The revision this run last wrote (or read): its next write is accepted only if
        #: the stored one is still this, so it can only continue from its own state.
        self.revision = instance.revision
        #: Set when the orchestrator found this run's state stale (somebody else moved the
        #: saga on meanwhile): it must never write again.
        self.revoked = False
        self.updated_at = instance.updated_at
        self.released = False
        self.cancel_requested = instance.cancel_requested
        #: The step this run parked the saga at (it waits for that step's signal).
        self.parked: WaitFor | None = None
        self.park_until: float | None = None
        #: Serialises writes: the members of a parallel group write concurrently (a saga
        #: without parallel groups writes from one task, one write at a time: no lock).
        self.lock = asyncio.Lock() if saga.parallel else None
        #: Set (with no await before it is read) when this run starts compensating, so that
        #: the other members of a parallel group stop and never start the next group.
        self.stopping = False

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
            revision=self.revision,
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
        outbox: tuple[OutboxMessage, ...] | Outgoing = (),
    ) -> None:
        """Persist the current step rows that changed, and the saga's new status.

        With ``local`` (a local action and its step's index), the action runs in the same
        transaction and its result becomes that step's result. With ``park_until``, the
        lease is given up until then (a step waits for a signal). ``outbox`` holds the
        messages the transaction adds to the outbox, or (with ``local``) builds them from
        the action's result.
        """
        # The rows the caller just changed (no await since): taken before waiting for the
        # lock, so that a concurrent member's rows go with that member's own write.
        rows = self.steps.take_changed()
        if self.lock is None:
            await self._write(rows, events, status, error, failed_step, local, park_until, outbox)
            return
        async with self.lock:
            await self._write(rows, events, status, error, failed_step, local, park_until, outbox)

    async def _write(
        self,
        rows: tuple[StepRecord, ...],
        events: tuple[SagaEvent, ...],
        status: SagaStatus | None,
        error: str | None,
        failed_step: str | None,
        local: tuple[object, int] | None,
        park_until: float | None,
        outbox: tuple[OutboxMessage, ...] | Outgoing,
    ) -> None:
        new_status = status or self.status
        if self.revoked:
            raise LeaseLost(self.saga_id)
        change = Transition(
            saga_id=self.saga_id,
            fence=self.fence,
            revision=self.revision,
            status=new_status,
            steps=rows,
            events=events,
            error=error if error is not None else self.error,
            failed_step=failed_step if failed_step is not None else self.failed_step,
            release=not new_status.is_active,
            park_until=park_until,
            outbox=outbox if isinstance(outbox, tuple) else (),
        )
        later = None if isinstance(outbox, tuple) else outbox
        try:
            if local is None:
                cancel = await self.store.transition(change)
            else:
                cancel = await self._apply(change, local, later)
        except LeaseLost:
            # Our process may have claimed the saga back after our lease lapsed: go on
            # under its fence only if nobody wrote in between (the stored revision is
            # still the one we wrote last); otherwise our state is stale: stop.
            fence = self.adoption(change.saga_id, change.revision)
            if fence is None or fence <= change.fence or self.revoked:
                raise
            self.fence = fence
            cancel = await self._apply(replace(change, fence=fence), local, later)
        self._written(change, new_status, cancel, events)

    def _written(
        self,
        change: Transition,
        new_status: SagaStatus,
        cancel: bool,
        events: tuple[SagaEvent, ...],
    ) -> None:
        self.cancel_requested = self.cancel_requested or cancel
        self.revision = change.revision + 1
        self.status = new_status
        self.error = change.error
        self.failed_step = change.failed_step
        self.updated_at = change.at
        self.released = change.release
        if self.listeners:
            self.notify(self.instance, events)

    async def _apply(
        self, change: Transition, local: tuple[object, int] | None, later: Outgoing | None
    ) -> bool:
        if local is None:
            return await self.store.transition(change)
        action, index = local
        cancel, result = await self.store.transition_with(change, action, index, outgoing=later)
        # Already written with the transition: not a change for the next write.
        list.__setitem__(self.steps, index, self.steps[index].evolve(result=result))
        return cancel

    def context(self, index: int, attempt: int) -> StepContext:
        record = self.steps[index]
        # The results of the steps before this step's group (a sibling's is not an input).
        before = self.saga.group_of[index][0]
        return StepContext(
            saga_id=self.saga_id,
            saga_name=self.origin.name,
            step=record.name,
            input=self.origin.input,
            results={s.name: s.result for s in self.steps[:before] if s.result is not None},
            idempotency_key=idempotency_key(self.saga_id, record.name),
            attempt=attempt,
            result=record.result,
        )

    def outgoing(
        self, indices: Iterable[int], *, compensation: bool = False
    ) -> tuple[OutboxMessage, ...]:
        """The messages steps ``indices`` send with the attempt their rows now record."""
        if not self.saga.senders:  # the common case, on every start: nothing to build
            return ()
        return self._messages(self._contexts(indices, compensation), compensation, None)

    def outgoing_after(self, index: int, following: Sequence[int]) -> Outgoing | None:
        """The messages of the group ``following`` starts, once step ``index``'s local action
        has given its result (which their contexts must hold); ``None`` if they send none."""
        contexts = self._contexts(following, False)
        if not contexts:
            return None
        name = self.steps[index].name
        return lambda result: self._messages(contexts, False, (name, result))

    def _contexts(
        self, indices: Iterable[int], compensation: bool
    ) -> list[tuple[Step, StepContext]]:
        found = []
        for i in indices:
            if i in self.saga.senders:
                record = self.steps[i]
                attempt = record.compensation_attempts if compensation else record.attempts
                found.append((self.saga.steps[i], self.context(i, attempt)))
        return found

    @staticmethod
    def _messages(
        contexts: list[tuple[Step, StepContext]],
        compensation: bool,
        extra: tuple[str, JSON] | None,
    ) -> tuple[OutboxMessage, ...]:
        messages = []
        for step, ctx in contexts:
            if extra is not None:
                ctx = replace(ctx, results={**ctx.results, extra[0]: extra[1]})
            if (message := step.outgoing(ctx, compensation=compensation)) is not None:
                messages.append(message)
        return tuple(messages)

    async def call(
        self, step: Step, ctx: StepContext, action: Callable[[StepContext], Awaitable[JSON]]
    ) -> JSON:
        token = current_step.set(ctx)
        try:
            if step.timeout is None:
                return await action(ctx)
            # The task driving a saga without parallel groups is the one that made this run
            # (a parallel group's members run in tasks of their own: looked up then).
            task = None if self.saga.parallel else self.task
            return await within(step.timeout, action(ctx), self.deadlines, task)
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
        if len(self.saga.group_of[index]) > 1:
            await self.forward_group(self.saga.group_of[index])
            return
        record = self.steps[index]
        if record.attempts and isinstance(self.saga.steps[index], WaitFor):
            # Waiting is not an attempt: resumed (by a signal, a deadline or a crash), the
            # step looks for its signal again, with the deadline it started with.
            await self.run_from(index)
            return
        if record.attempts == 0:
            self.steps[index] = record.evolve(
                status=StepStatus.RUNNING,
                attempts=record.attempts + 1,
                started_at=self.clock(),
            )
            await self.write(
                SagaEvent(type="step_started", step=record.name, attempt=1),
                outbox=self.outgoing((index,)),
            )
        elif not self.saga.steps[index].retry.can_retry(record.attempts - CRASH_ALLOWANCE):
            # Recovered with every attempt (and the crash allowance) spent: a step that kills
            # its process every time must end, so its outcome is treated as unknown.
            await self.give_up(index, record.error or "attempts exhausted before a crash")
            return
        else:
            attempt = record.attempts + 1
            self.steps[index] = record.evolve(attempts=attempt)
            await self.write(
                SagaEvent(type="step_started", step=record.name, attempt=attempt),
                outbox=self.outgoing((index,)),
            )
        await self.run_from(index)

    async def forward_group(self, group: tuple[int, ...]) -> None:
        """Resume a parallel group: start its members not yet started, rerun those running."""
        events, started = [], []
        for index in group:
            record = self.steps[index]
            if record.status is StepStatus.SUCCEEDED:
                continue
            if record.attempts == 0:
                self.steps[index] = record.evolve(
                    status=StepStatus.RUNNING, attempts=1, started_at=self.clock()
                )
                events.append(SagaEvent(type="step_started", step=record.name, attempt=1))
                started.append(index)
            elif not self.saga.steps[index].retry.can_retry(record.attempts - CRASH_ALLOWANCE):
                # As for a single step: every attempt and the crash allowance are spent.
                # The other members' outcomes are unknown; they are compensated too.
                await self.give_up(index, record.error or "attempts exhausted before a crash")
                return
            else:
                attempt = record.attempts + 1
                self.steps[index] = record.evolve(status=StepStatus.RUNNING, attempts=attempt)
                events.append(SagaEvent(type="step_started", step=record.name, attempt=attempt))
                started.append(index)
        await self.write(*events, outbox=self.outgoing(started))
        await self.run_from(group[0])

    async def run_from(self, index: int) -> None:
        """Run attempts from step ``index`` on, whose start is already recorded."""
        while self.status is SagaStatus.RUNNING and self.parked is None:
            if self.cancel_requested:
                await self.cancel(index)
                return
            if self.past_deadline():
                await self.cancel(index, f"the saga's deadline of {self.saga.deadline:g}s passed")
                return
            group = self.saga.group_of[index]
            if len(group) > 1:
                index = await self.run_group(group)
            else:
                index = await self.attempt(index)

    async def run_group(self, group: tuple[int, ...]) -> int:
        """Run a started parallel group's members concurrently; return the step to run next.

        Each member retries its own step until it succeeds or the saga stops going forward.
        The first member to raise (a crash, a lost lease) stops the others, and is re-raised.
        """
        tasks = [asyncio.create_task(self.run_member(index)) for index in group]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                error = task.exception() if task in done else None
                if error is not None:
                    raise error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return next(
            (i for i in group if self.steps[i].status is not StepStatus.SUCCEEDED), group[-1] + 1
        )

    async def run_member(self, index: int) -> None:
        """Attempt one member of a parallel group until it ends or the saga stops forward."""
        while (
            self.status is SagaStatus.RUNNING
            and not self.stopping
            and not self.cancel_requested
            and not self.past_deadline()
            and self.steps[index].status is StepStatus.RUNNING
        ):
            await self.attempt(index)

    def past_deadline(self) -> bool:
        """Whether the saga has run past its definition's deadline (``Saga(deadline=...)``)."""
        deadline = self.saga.deadline
        return deadline is not None and self.clock() >= self.origin.created_at + deadline

    async def cancel(self, index: int, message: str = "cancelled by an operator") -> None:
        """An operator cancelled, or the saga's deadline passed: compensate from the step about
        to run, whose state is unknown."""
        record = self.steps[index]
        self.steps[index] = record.evolve(status=StepStatus.COMPENSATING, finished_at=self.clock())
        event = SagaEvent(type="saga_cancelled", step=record.name, detail=message)
        await self.begin_compensation(event, message, record.name)

    async def attempt(self, index: int) -> int:
        """Run the recorded attempt of step ``index``; return the step to run next."""
        step = self.saga.steps[index]
        if isinstance(step, WaitFor):
            return await self.wait_for(index, step)
        record = self.steps[index]
        ctx = self.context(index, record.attempts)
        self.probe("before_do", step.name)
        action = step.local_action(ctx, self.store)
        if action is not None:
            return await self.attempt_locally(index, action)
        try:
            result = await self.call(step, ctx, step.do)
        except StepFailed as exc:
            await self.reject(index, exc.message)
            return index
        except Exception as exc:  # transient or unknown: the retry policy decides
            await self.failed_attempt(index, describe(exc))
            return index
        self.probe("after_do", step.name)
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
        signals = await self.store.signals(self.saga_id)
        if step.signal in signals:
            return await self.succeed(index, signals[step.signal])
        started = record.started_at if record.started_at is not None else self.clock()
        deadline = WAIT_FOREVER if step.deadline is None else started + step.deadline
        if self.clock() >= deadline:
            if isinstance(step, SleepStep):
                return await self.succeed(index, {"slept": step.seconds})
            await self.give_up(index, f"no signal {step.signal!r} within {step.deadline}s")
            return index
        if self.saga.deadline is not None:  # woken at the saga's deadline, if that comes first
            deadline = min(deadline, self.origin.created_at + self.saga.deadline)
        self.probe("before_wait", step.name)
        self.steps[index] = record.evolve(status=StepStatus.WAITING)
        event = SagaEvent(type="step_waiting", step=step.name, detail=step.waiting())
        await self.write(event, park_until=deadline)
        self.parked, self.park_until = step, deadline
        return index

    async def attempt_locally(self, index: int, action: object) -> int:
        """Run a local action in the transaction that records its success."""
        step = self.saga.steps[index]
        # Only the rows succeed() may touch: a concurrent sibling's rows are its own.
        touched = [index, *self.next_group(index)]
        saved = self.steps.save(touched)
        try:
            following = await self.succeed(index, None, local=action)
        except StepFailed as exc:
            self.steps.restore(saved)
            await self.reject(index, exc.message)
            return index
        except Exception as exc:  # transient or unknown: nothing was applied
            self.steps.restore(saved)
            await self.failed_attempt(index, describe(exc))
            return index
        self.probe("after_do", step.name)
        return following

    def next_group(self, index: int) -> tuple[int, ...]:
        """The indices of the group after step ``index``'s (empty after the last group)."""
        after = self.saga.group_of[index][-1] + 1
        return self.saga.group_of[after] if after < len(self.steps) else ()

    async def succeed(self, index: int, result: JSON, *, local: object | None = None) -> int:
        """Record step ``index`` as succeeded and, if its group is done, start the next one.

        One write. In a parallel group only the last member to succeed starts the next
        group: the check and the changes have no await between them.
        """
        record = self.steps[index]
        self.steps[index] = record.ended(
            StepStatus.SUCCEEDED, self.clock(), result=result, error=None
        )
        events = [SagaEvent(type="step_succeeded", step=record.name, attempt=record.attempts)]
        with_action = None if local is None else (local, index)
        group = self.saga.group_of[index]
        if self.stopping or (
            len(group) > 1 and any(self.steps[i].status is not StepStatus.SUCCEEDED for i in group)
        ):
            # A sibling still runs (or the saga is compensating): record this member only.
            await self.write(*events, local=with_action)
            return index
        following = self.next_group(index)
        if not following:
            events.append(SagaEvent(type="saga_completed"))
            await self.write(*events, status=SagaStatus.COMPLETED, local=with_action)
            return index
        for i in following:
            row = self.steps[i]
            self.steps[i] = row.begun(self.clock())
            events.append(SagaEvent(type="step_started", step=row.name, attempt=1))
        outbox = (
            self.outgoing(following) if local is None else self.outgoing_after(index, following)
        )
        await self.write(*events, local=with_action, outbox=outbox or ())
        return following[0]

    async def reject(self, index: int, message: str) -> None:
        """A business rejection: this step applied nothing; undo the ones before it."""
        record = self.steps[index]
        self.steps[index] = record.evolve(
            status=StepStatus.FAILED, error=message, finished_at=self.clock()
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
        # The next attempt is recorded now: its message goes with it (and out at once; the
        # receiver deduplicates it by the step's key, whatever the delay).
        await self.write(
            SagaEvent(
                type="step_retry",
                step=record.name,
                attempt=record.attempts,
                detail=f"{message}; attempt {record.attempts + 1} in {delay:.3f}s",
            ),
            outbox=self.outgoing((index,)),
        )
        await self.sleep(delay)

    async def give_up(self, index: int, message: str) -> None:
        """Retries ran out: the step's effect is unknown, so it is compensated too."""
        record = self.steps[index]
        self.steps[index] = record.evolve(
            status=StepStatus.COMPENSATING, error=message, finished_at=self.clock()
        )
        event = SagaEvent(
            type="step_exhausted", step=record.name, attempt=record.attempts, detail=message
        )
        await self.begin_compensation(event, message, record.name)

    async def begin_compensation(self, event: SagaEvent, error: str, failed_step: str) -> None:
        if self.stopping:
            # A sibling in a parallel group already turned the saga backward: its reason stands.
            await self.write(event)
            return
        self.stopping = True
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
        for event in reversed(await self.store.events(self.saga_id)):
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
                SagaEvent(type="compensation_attempt", step=step.name, attempt=attempt),
                outbox=self.outgoing((index,), compensation=True),
            )
            self.probe("before_compensate", step.name)
            try:
                await self.call(step, self.context(index, attempt), step.compensate)
            except Exception as exc:  # compensations are retried whatever failed
                if not await self.compensation_failed(index, describe(exc)):
                    return False
                continue
            self.probe("after_compensate", step.name)
            logger.info(
                "saga %s: compensated step %s",
                self.saga_id,
                step.name,
                extra=self.fields(step.name, attempt),
            )
            self.steps[index] = self.steps[index].evolve(
                status=StepStatus.COMPENSATED, finished_at=self.clock()
            )
            await self.write(
                SagaEvent(type="compensation_succeeded", step=step.name, attempt=attempt)
            )
            return True

    def fields(self, step: str, attempt: int) -> dict[str, object]:
        """The fields of a log line about this saga's ``step`` (outside the step's own code)."""
        return {"saga_id": self.saga_id, "saga": self.saga.name, "step": step, "attempt": attempt}

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
            await self.sleep(delay)
            return True
        logger.error(
            "saga %s: compensation of %s failed for good: %s",
            self.saga_id,
            step.name,
            message,
            extra=self.fields(step.name, attempt),
        )
        await self.write(
            SagaEvent(type="compensation_failed", step=step.name, attempt=attempt, detail=message),
            SagaEvent(type="saga_failed", step=step.name, detail=message),
            status=SagaStatus.FAILED,
            error=f"{COMPENSATION_FAILED}{step.name} failed: {message}",
        )
        return False
