"""The store seam: what the engine writes (``SagaStore``) and what readers ask (``SagaQueries``).

Every backend keeps the same promises:

- ``start`` is atomic per business key: while a saga with that name and key is active,
  completed or failed, starting again returns it instead of creating a second one.
- ``transition`` applies all of its changes in one transaction, and only if the caller's
  fence is still the instance's current one; otherwise it raises :class:`LeaseLost`.
- ``claim_*`` hand an active instance to a new owner and bump its fence, so that the
  previous owner's writes are refused from then on.
- Nothing is acknowledged before it is durable.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from sagakit.records import (
    JSON,
    JSONObject,
    OutboxMessage,
    Outgoing,
    Plan,
    SagaEvent,
    SagaInstance,
    SagaStatus,
    StartResult,
    Transition,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaPage:
    """One page of a saga listing, newest first, and the cursor of the next page."""

    sagas: tuple[SagaInstance, ...]
    next_cursor: str | None


class SagaQueries(Protocol):
    """Reads, for the API, the dashboard and the CLI."""

    async def get(self, saga_id: str) -> SagaInstance | None:
        """The instance with its steps, or ``None``."""
        ...

    async def events(self, saga_id: str) -> list[SagaEvent]:
        """The instance's history, oldest first."""
        ...

    async def list_sagas(
        self,
        *,
        status: SagaStatus | None = None,
        name: str | None = None,
        business_key: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SagaPage:
        """A page of instances, newest first, that match every filter given.

        ``created_after`` is inclusive and ``created_before`` exclusive (epoch seconds), so
        adjacent ranges never list a saga twice. ``cursor`` is a page's ``next_cursor``,
        passed back with the same filters.
        """
        ...

    async def latest_by_key(self, name: str, business_key: str) -> SagaInstance | None:
        """The newest instance of ``name`` started with ``business_key``."""
        ...

    async def count_by_status(self) -> dict[SagaStatus, int]:
        """How many instances are in each status."""
        ...

    async def ping(self) -> None:
        """Raise :class:`~sagakit.errors.StoreError` unless the store answers."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRow:
    """One command of the outbox, as a relay publishes it."""

    id: int
    saga_id: str
    step: str
    key: str
    kind: str
    #: The command's body, as JSON text (a relay sends it on without decoding it).
    body: str


class MessageStore(Protocol):
    """The outbox and the replies, in the saga store's database, for the transports.

    The outbox holds the commands the transitions recorded (``Step.outgoing``), in the
    order they were written, until a relay has them confirmed; the replies hold each
    (saga, name) answer once, the first delivery winning.
    """

    async def outbox_unsent(
        self, limit: int = 100, *, owner: str | None = None, before: float = 0.0
    ) -> list[OutboxRow]:
        """Up to ``limit`` unsent commands, oldest first.

        With ``owner``, only those of the sagas ``owner`` holds and those written before
        ``before`` (epoch seconds): each process relays its own sagas' commands at once,
        and another's only once they are late.
        """
        ...

    async def outbox_published(self, saga_id: str, step: str, kind: str) -> bool:
        """Whether the latest ``kind`` command of ``step`` of ``saga_id`` was marked sent."""
        ...

    async def outbox_mark_sent(self, ids: list[int]) -> None:
        """Record that the commands ``ids`` were published (confirmed by the broker)."""
        ...

    async def add_reply(self, saga_id: str, name: str, payload: JSONObject) -> bool:
        """Keep the reply ``name`` of ``saga_id`` unless one is kept; whether it was new."""
        ...

    async def reply(self, saga_id: str, name: str) -> JSONObject | None:
        """The reply ``name`` of ``saga_id``, if it came."""
        ...

    async def prune_messages(self, before: float) -> tuple[int, int]:
        """Delete the commands sent before ``before``, and the replies kept since before it
        whose saga is not running, compensating or failed; how many of each."""
        ...


class SagaStore(SagaQueries, MessageStore, Protocol):
    """Writes, for the orchestrator and the worker."""

    async def start(
        self,
        instance: SagaInstance,
        event: SagaEvent,
        *,
        lease_seconds: float,
        outbox: tuple[OutboxMessage, ...] = (),
    ) -> StartResult:
        """Insert ``instance`` owned by ``instance.owner``, unless its key is taken (see above).

        ``outbox`` holds the messages its first steps send: written only if it is inserted.
        """
        ...

    async def transition(self, change: Transition) -> bool:
        """Apply ``change`` atomically, or raise ``LeaseLost`` if its fence is stale.

        Returns whether an operator has asked to cancel the saga.
        """
        ...

    async def start_unit(
        self, instance: SagaInstance, event: SagaEvent, *, lease_seconds: float, plan: Plan
    ) -> StartResult:
        """Start ``instance`` as :meth:`start` does and, if it was created, run ``plan`` in
        the same transaction: each local action it yields in a savepoint of its own (rolled
        back if it raises, kept if it refuses), then the transition it returns.

        One commit for the whole run. If the plan itself raises, nothing at all is written
        and the exception is raised here.
        """
        ...

    async def transition_with(
        self,
        change: Transition,
        action: object,
        index: int,
        *,
        outgoing: Outgoing | None = None,
    ) -> tuple[bool, JSON]:
        """Run the local ``action`` and apply ``change`` in one transaction.

        The action's result becomes step ``index``'s result; ``outgoing``, given that
        result, gives the messages the transaction adds to the outbox (with
        ``change.outbox``). Returns the cancel flag (as
        ``transition`` does) and that result. Raises ``StepFailed`` when the action refuses,
        ``LeaseLost`` when the fence is stale, and ``StoreError`` for an action this store
        cannot run; in every case nothing was applied.
        """
        ...

    async def claim(self, saga_id: str, *, owner: str, lease_seconds: float) -> SagaInstance | None:
        """Take the active instance ``saga_id`` if its lease is free or expired."""
        ...

    async def claim_expired(
        self,
        *,
        owner: str,
        lease_seconds: float,
        limit: int,
        definitions: Collection[tuple[str, int]] | None = None,
    ) -> list[SagaInstance]:
        """Take up to ``limit`` active instances whose lease is free or expired.

        With ``definitions`` (``(name, version)`` pairs), only instances of those: a
        process must not take an instance it has no definition for.
        """
        ...

    async def renew(
        self, *, owner: str, lease_seconds: float, saga_ids: Collection[str] | None = None
    ) -> int:
        """Extend the leases ``owner`` holds (only of ``saga_ids``, if given); return how many."""
        ...

    async def add_signal(self, saga_id: str, name: str, payload: JSON, event: SagaEvent) -> bool:
        """Keep the signal ``name`` for the ``running`` instance ``saga_id``; whether it is new.

        The first delivery of a name wins: a duplicate changes nothing and records no
        event. Either way a parked instance (one waiting, whose lease nobody holds) becomes
        claimable at once, as :meth:`wake` makes it. Raises ``SagaNotFound``, or
        ``InvalidTransition`` when the saga is not running.
        """
        ...

    async def signals(self, saga_id: str) -> dict[str, JSON]:
        """The signals kept for ``saga_id``: each name's payload."""
        ...

    async def wake(self, saga_id: str) -> None:
        """Make the parked instance ``saga_id`` claimable now rather than at its deadline."""
        ...

    async def on_release(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever another process hands sagas back (a graceful stop).

        Stores that cannot notify other processes return at once; workers then poll.
        """
        ...

    async def release(self, *, owner: str) -> int:
        """Give up every lease ``owner`` holds (graceful shutdown); return how many."""
        ...

    async def reopen(
        self, saga_id: str, event: SagaEvent, *, owner: str, lease_seconds: float
    ) -> SagaInstance:
        """Turn a ``failed`` instance back to ``compensating``, claimed by ``owner``.

        Raises ``SagaNotFound`` or ``InvalidTransition``.
        """
        ...

    async def request_cancel(self, saga_id: str, event: SagaEvent) -> SagaInstance:
        """Flag a ``running`` instance for cancellation and record ``event``.

        Raises ``SagaNotFound`` or ``InvalidTransition``.
        """
        ...

    async def resolve(self, saga_id: str, event: SagaEvent) -> SagaInstance:
        """Mark a ``failed`` instance ``compensated`` by hand and record ``event``.

        Raises ``SagaNotFound`` or ``InvalidTransition``.
        """
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...


def run_plan(plan: Plan, run: Callable[[object], JSON]) -> Transition | None:
    """Drive ``plan`` to its transition, running each action it yields with ``run``.

    ``run`` runs one action (in a savepoint of the store's transaction) and returns its
    result; what it raises is thrown into the plan, which decides what that means.
    """
    result: JSON = None
    error: Exception | None = None
    while True:
        try:
            action = plan.send(result) if error is None else plan.throw(error)
        except StopIteration as end:
            written: Transition | None = end.value
            return written
        result, error = None, None
        try:
            result = run(action)
        except Exception as raised:
            error = raised
