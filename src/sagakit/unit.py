"""One durable unit for a saga whose steps are all local: start, actions, outcome in one commit.

A *local* step's effect lives in the saga store's own database (``Step.local_action``), so
nothing forces its record and its effect into separate transactions. ``LocalUnit.plan``
drives such a saga inside the single store transaction that inserts it: each step's
action runs in a savepoint, a business refusal compensates the steps before it with their
local compensations, and the outcome, every step's row and the whole history are written
by the same commit, group-committed with the other sagas of that instant. A crash before
the commit leaves nothing (the caller got no answer); after it, nothing is left to do.

The plan is a generator, so that one state machine serves a store that runs it on a
synchronous connection (SQLite's writer thread) and one that awaits each action
(PostgreSQL): it yields each action object; the store runs it in a savepoint and sends
back its result, or throws in what it raised (after rolling the savepoint back, unless it
is a refusal, whose inbox row stays). The generator returns the transition to apply.

A store that can send the whole unit as one statement (PostgreSQL, when every action is a
``PostgresCall``) sends each forward action's result *before* running it, as a
``Tentative``: the result it gives when it applies. The plan then runs to its end without
waiting, yields ``Confirm(written)``, and the store runs everything at once. If every
action applied, the store sends ``None`` and the plan returns ``written``; if one was
refused, the store throws in ``Retracted`` and the plan starts again from its first step
(``_reset``), now sent real results one action at a time.

The unit leaves off, and the ordinary driver goes on with per-transition writes, at the
first step that has no local action here (its start is recorded, so the driver runs it
next), at an action that errors (rolled back: the driver retries it, as attempt 1), or at
a compensation that is not local or fails. Sagas that send messages, wait for signals or
run parallel groups never enter it.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Final

from sagakit.errors import StepFailed
from sagakit.records import (
    JSON,
    Confirm,
    Plan,
    Retracted,
    SagaEvent,
    SagaInstance,
    SagaStatus,
    StepRecord,
    StepStatus,
    Tentative,
    Transition,
)
from sagakit.run import Clock, Probe, current_step, describe
from sagakit.saga import Saga, StepContext, WaitFor, idempotency_key

logger = logging.getLogger("sagakit")

#: ``resume_at`` of a unit that left its saga compensating (the driver goes backward).
BACKWARD: Final = -1


def fits(saga: Saga) -> bool:
    """Whether ``saga``'s shape can run as one unit: no messages, waits or parallel groups."""
    return not saga.senders and all(
        len(group) == 1 and not isinstance(saga.steps[group[0]], WaitFor) for group in saga.groups
    )


class LocalUnit:
    """The plan of one saga instance as one unit, and where it left the saga."""

    def __init__(
        self, saga: Saga, instance: SagaInstance, store: object, clock: Clock, probe: Probe
    ) -> None:
        self.saga = saga
        self.origin = instance
        self.store = store
        self.clock = clock
        self.probe = probe
        self._reset()

    def _reset(self) -> None:
        """The state of a plan that has not run yet (again, after ``Retracted``)."""
        self.steps = list(self.origin.steps)
        self.events: list[SagaEvent] = []
        self.status = SagaStatus.RUNNING
        self.error: str | None = None
        self.failed_step: str | None = None
        #: The step the ordinary driver runs next (``BACKWARD``: it compensates), or
        #: ``None`` once the saga has ended inside the unit.
        self.resume_at: int | None = None
        #: Whether the plan ran to its end (a store may abandon it, rolled back whole).
        self.finished = False
        #: The transition the plan returned (set once it has run).
        self.written: Transition | None = None
        #: The local compensations that ran, and what each returned, in order.
        self.undone: list[tuple[int, JSON]] = []
        #: How long the driver waits before the attempt it resumes with (a retry's backoff).
        self.delay = 0.0
        #: Whether the store sent a result before running its action (``Tentative``).
        self.tentative = False
        #: The first step's local action, once :meth:`opens_locally` has asked for it.
        self._opening: object | None = None

    def opens_locally(self) -> bool:
        """Whether the first step has a local action here (else the unit would run nothing)."""
        self._opening = self.saga.steps[0].local_action(
            self._context(0, compensation=False), self.store
        )
        return self._opening is not None

    def instance(self, stored: SagaInstance) -> SagaInstance:
        """The instance as the store inserted it (``stored``), once the unit's transition
        was applied to it."""
        if self.written is None:
            return stored  # it ran nothing: the saga is as it was inserted
        ended = not self.status.is_active
        return stored.evolve(
            status=self.status,
            steps=tuple(self.steps),
            error=self.error,
            failed_step=self.failed_step,
            updated_at=self.written.at,
            owner=None if ended else stored.owner,
            lease_until=None if ended else stored.lease_until,
            revision=stored.revision + 1,
        )

    def plan(self) -> Plan:
        """Run every step's local action in turn; see the module's docstring."""
        while True:
            try:
                written = yield from self._plan()
                if self.tentative:  # the store confirms (sends None), retracts or closes
                    yield Confirm(written)
            except Retracted:  # a tentative result was wrong: run again, with real ones
                self._reset()
                continue
            self.finished = True
            return written

    def _plan(self) -> Plan:
        for index, step in enumerate(self.saga.steps):
            if index:
                self._start(index)
            if index == 0 and self._opening is not None:
                action, self._opening = self._opening, None
            else:
                action = step.local_action(self._context(index, compensation=False), self.store)
            if action is None:
                return self._leave(index)
            self.probe("before_do", step.name)
            try:
                result = yield action
                if isinstance(result, Tentative):
                    self.tentative, result = True, result.result
            except StepFailed as refusal:
                return (yield from self._refused(index, refusal.message))
            except Exception as error:  # rolled back: retried by the driver, as today
                return (yield from self._errored(index, describe(error)))
            self.probe("after_do", step.name)
            self._succeeded(index, result)
        self.events.append(SagaEvent(type="saga_completed"))
        self.status = SagaStatus.COMPLETED
        return self._transition()

    def _start(self, index: int) -> None:
        name = self.steps[index].name
        self.steps[index] = StepRecord(
            index=index, name=name, status=StepStatus.RUNNING, attempts=1, started_at=self.clock()
        )
        self.events.append(SagaEvent(type="step_started", step=name, attempt=1))

    def _succeeded(self, index: int, result: JSON) -> None:
        record = self.steps[index]
        self.steps[index] = record.ended(
            StepStatus.SUCCEEDED, self.clock(), result=result, error=record.error
        )
        self.events.append(SagaEvent(type="step_succeeded", step=record.name, attempt=1))

    def tell_compensated(self) -> None:
        """Once the unit is durable: tell each step its local compensation ran
        (``Step.after_compensation``), with its context as the current step."""
        for index, outcome in self.undone:
            step = self.saga.steps[index]
            ctx = self._context(index, compensation=True)
            token = current_step.set(ctx)
            try:
                step.after_compensation(ctx, outcome)
            except Exception:
                logger.exception("after_compensation of %s failed", step.name)
            finally:
                current_step.reset(token)

    def _context(self, index: int, *, compensation: bool) -> StepContext:
        record = self.steps[index]
        return StepContext(
            saga_id=self.origin.saga_id,
            saga_name=self.origin.name,
            step=record.name,
            input=self.origin.input,
            results={s.name: s.result for s in self.steps[:index] if s.result is not None},
            idempotency_key=idempotency_key(self.origin.saga_id, record.name),
            attempt=1,
            result=record.result if compensation else None,
        )

    def _errored(self, index: int, message: str) -> Plan:
        """Record what the driver would after a transient error, and leave the unit."""
        record = self.steps[index]
        policy = self.saga.steps[index].retry
        if policy.can_retry(1):
            self.delay = policy.delay(1)
            self.steps[index] = record.evolve(attempts=2, error=message)
            detail = f"{message}; attempt 2 in {self.delay:.3f}s"
            self.events.append(
                SagaEvent(type="step_retry", step=record.name, attempt=1, detail=detail)
            )
            return self._leave(index)
        # Its retries ran out at once: its effect counts as unknown, as the driver has it.
        self.steps[index] = record.evolve(
            status=StepStatus.COMPENSATING, error=message, finished_at=self.clock()
        )
        self.events.append(
            SagaEvent(type="step_exhausted", step=record.name, attempt=1, detail=message)
        )
        return (yield from self._backward(index, message))

    def _refused(self, index: int, message: str) -> Plan:
        record = self.steps[index]
        self.steps[index] = record.evolve(
            status=StepStatus.FAILED, error=message, finished_at=self.clock()
        )
        self.events.append(
            SagaEvent(type="step_failed", step=record.name, attempt=1, detail=message)
        )
        return (yield from self._backward(index, message))

    def _backward(self, index: int, message: str) -> Plan:
        """Compensate, newest first, every step up to ``index`` that may have applied."""
        record = self.steps[index]
        self.error, self.failed_step = message, record.name
        if not any(s.status.needs_compensation for s in self.steps):
            self.events.append(SagaEvent(type="saga_compensated", detail=message))
            self.status = SagaStatus.COMPENSATED
            return self._transition()
        self.events.append(SagaEvent(type="compensation_started", step=record.name))
        self.status = SagaStatus.COMPENSATING
        for before in reversed(range(index + 1)):
            if self.steps[before].status.needs_compensation and not (yield from self._undo(before)):
                return self._leave(BACKWARD)
        self.events.append(SagaEvent(type="saga_compensated", detail=message))
        self.status = SagaStatus.COMPENSATED
        return self._transition()

    def _undo(self, index: int) -> Generator[object, JSON, bool]:
        """Compensate step ``index`` locally; whether it was (else the driver will)."""
        step = self.saga.steps[index]
        action = step.local_compensation(self._context(index, compensation=True), self.store)
        if action is None:
            return False
        self.probe("before_compensate", step.name)
        try:
            outcome = yield action
        except Exception:  # rolled back, refusals included: the driver retries it
            return False
        self.probe("after_compensate", step.name)
        self.undone.append((index, outcome))
        record = self.steps[index]
        self.steps[index] = record.evolve(
            status=StepStatus.COMPENSATED, compensation_attempts=1, finished_at=self.clock()
        )
        self.events.append(SagaEvent(type="compensation_attempt", step=step.name, attempt=1))
        self.events.append(SagaEvent(type="compensation_succeeded", step=step.name, attempt=1))
        return True

    def _leave(self, resume_at: int) -> Transition | None:
        self.resume_at = resume_at
        if not self.events:
            return None  # nothing ran: the insert recorded the first step's start already
        return self._transition()

    def _transition(self) -> Transition:
        self.written = Transition(
            saga_id=self.origin.saga_id,
            fence=self.origin.fence,
            revision=self.origin.revision,
            status=self.status,
            steps=tuple(self.steps),
            events=tuple(self.events),
            error=self.error,
            failed_step=self.failed_step,
            release=not self.status.is_active,
        )
        return self.written
