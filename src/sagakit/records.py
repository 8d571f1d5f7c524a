"""What the store keeps: saga instances, their steps and their events, as frozen records."""

from __future__ import annotations

import enum
import os
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

JSON: TypeAlias = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None
JSONObject: TypeAlias = dict[str, JSON]


class SagaStatus(enum.StrEnum):
    """Where a saga instance is: ``running`` → ``completed``, or → ``compensating`` → ..."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"

    @property
    def is_active(self) -> bool:
        """Whether some process must still drive the saga."""
        return self is _RUNNING or self is _COMPENSATING


# Module constants: compared by identity, faster than the class's attributes on every transition.
_RUNNING: Final = SagaStatus.RUNNING
_COMPENSATING: Final = SagaStatus.COMPENSATING


class StepStatus(enum.StrEnum):
    """Where one step of an instance is."""

    PENDING = "pending"
    RUNNING = "running"
    #: A :class:`~sagakit.saga.WaitFor` step waiting for its signal; nobody drives the saga.
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"

    @property
    def needs_compensation(self) -> bool:
        """Whether this step may have applied its effect and so must be compensated.

        ``failed`` is a business rejection (nothing applied); ``running`` is a step whose
        outcome is unknown, which is compensated like one that succeeded.
        """
        return self in (StepStatus.SUCCEEDED, StepStatus.RUNNING, StepStatus.COMPENSATING)


_ids = random.Random()
# A child process must not repeat its parent's ids.
os.register_at_fork(after_in_child=_ids.seed)


def new_id() -> str:
    """A fresh 128-bit id, in hex: saga ids, request ids, generated order ids.

    Drawn from a pseudo-random generator seeded by the OS, not from ``os.urandom`` itself:
    ids are unique, not secret, and ``uuid4`` makes a system call each time, which showed
    among the top frames of ``python -m bench.profile --target sqlite`` on this project's
    virtual machines.
    """
    return f"{_ids.getrandbits(128):032x}"


def now() -> float:
    """Wall-clock seconds since the epoch: every timestamp sagakit records."""
    return time.time()


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRecord:
    """The durable state of one step of one saga instance."""

    index: int
    name: str
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    compensation_attempts: int = 0
    result: JSON = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    def evolve(self, **changes: Any) -> StepRecord:
        """A copy with ``changes`` applied (on the hot path: cheaper than ``replace``)."""
        get = changes.get
        return StepRecord(
            index=get("index", self.index),
            name=get("name", self.name),
            status=get("status", self.status),
            attempts=get("attempts", self.attempts),
            compensation_attempts=get("compensation_attempts", self.compensation_attempts),
            result=get("result", self.result),
            error=get("error", self.error),
            started_at=get("started_at", self.started_at),
            finished_at=get("finished_at", self.finished_at),
        )

    def ended(
        self, status: StepStatus, at: float, *, result: JSON, error: str | None
    ) -> StepRecord:
        """This step's row once its attempt ended with ``status`` at ``at``."""
        return StepRecord(
            index=self.index,
            name=self.name,
            status=status,
            attempts=self.attempts,
            compensation_attempts=self.compensation_attempts,
            result=result,
            error=error,
            started_at=self.started_at,
            finished_at=at,
        )

    def begun(self, at: float) -> StepRecord:
        """This step's row once its next attempt is recorded as started at ``at``."""
        return StepRecord(
            index=self.index,
            name=self.name,
            status=StepStatus.RUNNING,
            attempts=self.attempts + 1,
            compensation_attempts=self.compensation_attempts,
            result=self.result,
            error=self.error,
            started_at=at,
            finished_at=self.finished_at,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaEvent:
    """One entry of a saga's history."""

    type: str
    step: str | None = None
    attempt: int | None = None
    detail: str | None = None
    at: float = field(default_factory=now)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxMessage:
    """A message a step sends to another service, written to the saga store's outbox.

    It is written in the same transaction as the transition that records the attempt it
    belongs to (the step's start, or a compensation attempt), and published later by a
    relay: the message exists if and only if that attempt is recorded. ``key`` is the
    step's idempotency key, by which the receiver deduplicates; ``step`` names the step
    (and so where the relay routes it), ``kind`` what is asked (``charge``, ``refund``).
    """

    step: str
    key: str
    kind: str
    body: JSONObject


#: Builds the messages of the steps a local action's transition starts, from its result.
Outgoing: TypeAlias = Callable[[JSON], tuple[OutboxMessage, ...]]


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaInstance:
    """One run of a saga definition, as the store has it."""

    saga_id: str
    name: str
    version: int
    status: SagaStatus
    input: JSONObject
    steps: tuple[StepRecord, ...]
    business_key: str | None = None
    error: str | None = None
    failed_step: str | None = None
    created_at: float = field(default_factory=now)
    updated_at: float = field(default_factory=now)
    owner: str | None = None
    fence: int = 0
    lease_until: float | None = None
    #: An operator asked to cancel: the driver compensates instead of running the next step.
    cancel_requested: bool = False
    #: How many transitions have been written: each one is accepted only from a writer that
    #: read this very revision (and holds the current fence), and adds one.
    revision: int = 0

    def evolve(self, **changes: Any) -> SagaInstance:
        """A copy with ``changes`` applied (on the hot path: cheaper than ``replace``)."""
        get = changes.get
        return SagaInstance(
            saga_id=get("saga_id", self.saga_id),
            name=get("name", self.name),
            version=get("version", self.version),
            status=get("status", self.status),
            input=get("input", self.input),
            steps=get("steps", self.steps),
            business_key=get("business_key", self.business_key),
            error=get("error", self.error),
            failed_step=get("failed_step", self.failed_step),
            created_at=get("created_at", self.created_at),
            updated_at=get("updated_at", self.updated_at),
            owner=get("owner", self.owner),
            fence=get("fence", self.fence),
            lease_until=get("lease_until", self.lease_until),
            cancel_requested=get("cancel_requested", self.cancel_requested),
            revision=get("revision", self.revision),
        )

    def results(self) -> dict[str, JSON]:
        """The values the steps' actions returned and the store kept, by step name."""
        return {s.name: s.result for s in self.steps if s.result is not None}


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """One atomic change to an instance, written only while ``fence`` and ``revision`` are
    still the instance's current ones (the writer holds the lease and has seen every earlier
    transition); writing it moves the instance to ``revision + 1``.

    ``steps`` are full step rows to overwrite; ``status``, ``error`` and ``failed_step``
    replace the instance's; ``release`` gives up the lease (the saga is finished);
    ``park_until`` gives it up until then (the saga waits for a signal); ``at`` becomes
    the instance's ``updated_at``.
    """

    saga_id: str
    fence: int
    status: SagaStatus
    #: The revision this change was made from (0: the saga as :meth:`SagaStore.start` wrote it).
    revision: int = 0
    steps: tuple[StepRecord, ...] = ()
    events: tuple[SagaEvent, ...] = ()
    error: str | None = None
    failed_step: str | None = None
    release: bool = False
    #: Park the saga: give up the lease, and let it be claimed again only after this time
    #: (a waiting step's deadline) or when a signal wakes it.
    park_until: float | None = None
    #: Messages to add to the outbox with this transition (sent only if it is written).
    outbox: tuple[OutboxMessage, ...] = ()
    at: float = field(default_factory=now)

    def with_result(self, index: int, result: JSON, outgoing: Outgoing | None) -> Transition:
        """This transition once step ``index``'s local action gave ``result``: that step's
        row carries it, and the messages ``outgoing`` builds from it join the outbox."""
        steps = tuple(s.evolve(result=result) if s.index == index else s for s in self.steps)
        return Transition(
            saga_id=self.saga_id,
            fence=self.fence,
            status=self.status,
            revision=self.revision,
            steps=steps,
            events=self.events,
            error=self.error,
            failed_step=self.failed_step,
            release=self.release,
            park_until=self.park_until,
            outbox=self.outbox + outgoing(result) if outgoing else self.outbox,
            at=self.at,
        )


@dataclass(frozen=True, slots=True)
class Tentative:
    """An action's result that a store sends a plan before it has run the action: it runs
    the actions later, together (one statement), and confirms or discards the plan's end."""

    result: JSON


@dataclass(frozen=True, slots=True)
class Confirm:
    """What a plan that was sent a ``Tentative`` result yields once it has run to its end:
    the store sends ``None`` back if every tentative result was right (the plan then
    returns ``written``), throws in ``Retracted``, or closes the plan (it is then
    unfinished: its saga runs the ordinary way)."""

    written: Transition | None


class Retracted(BaseException):
    """Thrown into a plan that was sent ``Tentative`` results, one of which was wrong: the
    plan starts again from its first step, and the store sends it real results. (Not an
    ``Exception``: the plan must not take it for an action's error.)"""


#: A saga run as one store transaction (``sagakit.unit``): it yields each local action for
#: the store to run, gets back its result (or has what it raised thrown in), and returns
#: the transition that records the whole run (``None``: it ran nothing, writes nothing).
#: A store may send a forward action's result as ``Tentative`` (see ``Confirm``, ``Retracted``).
Plan: TypeAlias = Generator[object, "JSON | Tentative", "Transition | None"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StartResult:
    """What starting a saga gave: the instance, and whether this call created it."""

    instance: SagaInstance
    created: bool
