"""What the store keeps: saga instances, their steps and their events, as frozen records."""

from __future__ import annotations

import enum
import os
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, fields, replace
from typing import TypeAlias

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
        return self in (SagaStatus.RUNNING, SagaStatus.COMPENSATING)


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

    def evolve(self, **changes: object) -> StepRecord:
        """A copy with ``changes`` applied (on the hot path: cheaper than ``replace``)."""
        values = {name: getattr(self, name) for name in _STEP_FIELDS}
        values.update(changes)
        return StepRecord(**values)


_STEP_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(StepRecord))


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

    def evolve(self, **changes: object) -> SagaInstance:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)  # type: ignore[arg-type]

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
        outbox = self.outbox + (outgoing(result) if outgoing else ())
        return replace(self, steps=steps, outbox=outbox)


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
