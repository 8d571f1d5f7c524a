"""The in-memory store: the reference behaviour, for unit tests and documentation.

Nothing survives the process. Every method takes one lock, so each call is atomic, as a
transaction is in the durable stores.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Collection

from sagakit.errors import InvalidTransition, LeaseLost, SagaNotFound, StoreError
from sagakit.records import (
    JSON,
    OutboxMessage,
    Outgoing,
    Plan,
    SagaEvent,
    SagaInstance,
    SagaStatus,
    StartResult,
    StepStatus,
    Transition,
    now,
)
from sagakit.store.base import SagaPage, run_plan
from sagakit.store.memory_messages import MemoryMessages


class MemoryStore(MemoryMessages):
    """A :class:`~sagakit.store.base.SagaStore` kept in dictionaries."""

    def __init__(self, *, clock: Callable[[], float] = now) -> None:
        #: Where leases and timestamps are read from (a test's ``FakeClock.time`` lets a
        #: test pass a lease or a deadline without waiting).
        self._clock = clock
        self._lock = asyncio.Lock()
        self._instances: dict[str, SagaInstance] = {}
        self._seq: dict[str, int] = {}
        self._events: dict[str, list[SagaEvent]] = {}
        self._signals: dict[str, dict[str, JSON]] = {}
        self._counter = itertools.count(1)
        #: The messages transitions added to the outbox, as (saga id, message), in order
        #: (nothing relays them: a test reads them here).
        self.outbox: list[tuple[str, OutboxMessage]] = []

    # -- reads ---------------------------------------------------------------------------

    async def get(self, saga_id: str) -> SagaInstance | None:
        return self._instances.get(saga_id)

    async def events(self, saga_id: str) -> list[SagaEvent]:
        return list(self._events.get(saga_id, ()))

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
        below = int(cursor) if cursor else None

        def wanted(saga_id: str) -> bool:
            i = self._instances[saga_id]
            return (
                (status is None or i.status is status)
                and (name is None or i.name == name)
                and (business_key is None or i.business_key == business_key)
                and (created_after is None or i.created_at >= created_after)
                and (created_before is None or i.created_at < created_before)
                and (below is None or self._seq[saga_id] < below)
            )

        ordered = sorted(self._instances, key=self._seq.__getitem__, reverse=True)
        chosen = [self._instances[i] for i in ordered if wanted(i)]
        page = tuple(chosen[:limit])
        more = len(chosen) > limit
        return SagaPage(sagas=page, next_cursor=str(self._seq[page[-1].saga_id]) if more else None)

    async def latest_by_key(self, name: str, business_key: str) -> SagaInstance | None:
        matches = [
            i for i in self._instances.values() if i.name == name and i.business_key == business_key
        ]
        return max(matches, key=lambda i: self._seq[i.saga_id]) if matches else None

    async def count_by_status(self) -> dict[SagaStatus, int]:
        counts = dict.fromkeys(SagaStatus, 0)
        for instance in self._instances.values():
            counts[instance.status] += 1
        return counts

    async def ping(self) -> None:
        return None

    # -- writes --------------------------------------------------------------------------

    async def start(
        self,
        instance: SagaInstance,
        event: SagaEvent,
        *,
        lease_seconds: float,
        outbox: tuple[OutboxMessage, ...] = (),
    ) -> StartResult:
        async with self._lock:
            if instance.business_key is not None:
                latest = await self.latest_by_key(instance.name, instance.business_key)
                if latest is not None and latest.status is not SagaStatus.COMPENSATED:
                    return StartResult(instance=latest, created=False)
            if instance.saga_id in self._instances:
                raise InvalidTransition(f"saga id {instance.saga_id!r} is taken")
            stored = instance.evolve(lease_until=self._clock() + lease_seconds)
            self._instances[stored.saga_id] = stored
            self._seq[stored.saga_id] = next(self._counter)
            self._events[stored.saga_id] = [event]
            self.outbox.extend((stored.saga_id, m) for m in outbox)
            return StartResult(instance=stored, created=True)

    async def start_unit(
        self, instance: SagaInstance, event: SagaEvent, *, lease_seconds: float, plan: Plan
    ) -> StartResult:
        started = await self.start(instance, event, lease_seconds=lease_seconds)
        if started.created:
            # No database, so no local action: a plan that yields one is told so.
            written = run_plan(plan, _no_local_actions)
            if written is not None:
                await self.transition(written)
        return started

    async def transition(self, change: Transition) -> bool:
        # No await from the check to the write: atomic without taking the lock.
        current = self._instances.get(change.saga_id)
        if current is None or current.fence != change.fence or current.revision != change.revision:
            raise LeaseLost(change.saga_id)
        steps = list(current.steps)
        for step in change.steps:
            steps[step.index] = step
        self._instances[change.saga_id] = SagaInstance(
            saga_id=current.saga_id,
            name=current.name,
            version=current.version,
            status=change.status,
            input=current.input,
            steps=tuple(steps),
            business_key=current.business_key,
            error=change.error,
            failed_step=change.failed_step,
            created_at=current.created_at,
            updated_at=change.at,
            owner=None if change.release or change.park_until is not None else current.owner,
            fence=current.fence,
            lease_until=None if change.release else _parked(change, current.lease_until),
            cancel_requested=current.cancel_requested,
            revision=current.revision + 1,
        )
        self._events[change.saga_id].extend(change.events)
        if change.outbox:
            self.outbox.extend((change.saga_id, m) for m in change.outbox)
        return current.cancel_requested

    async def transition_with(
        self,
        change: Transition,
        action: object,
        index: int,
        *,
        outgoing: Outgoing | None = None,
    ) -> tuple[bool, JSON]:
        raise StoreError("the memory store has no database to run a local action in")

    def _claimable(self, instance: SagaInstance, at: float) -> bool:
        return instance.status.is_active and (
            instance.lease_until is None or instance.lease_until < at
        )

    def _claim(self, instance: SagaInstance, owner: str, lease_seconds: float) -> SagaInstance:
        claimed = instance.evolve(
            owner=owner, fence=instance.fence + 1, lease_until=self._clock() + lease_seconds
        )
        self._instances[instance.saga_id] = claimed
        self._events[instance.saga_id].append(
            SagaEvent(type="saga_claimed", detail=f"claimed by {owner}")
        )
        return claimed

    async def claim(self, saga_id: str, *, owner: str, lease_seconds: float) -> SagaInstance | None:
        async with self._lock:
            instance = self._instances.get(saga_id)
            if instance is None or not self._claimable(instance, self._clock()):
                return None
            return self._claim(instance, owner, lease_seconds)

    async def claim_expired(
        self,
        *,
        owner: str,
        lease_seconds: float,
        limit: int,
        definitions: Collection[tuple[str, int]] | None = None,
    ) -> list[SagaInstance]:
        known = None if definitions is None else set(definitions)
        async with self._lock:
            at = self._clock()
            found = [
                i
                for i in self._instances.values()
                if self._claimable(i, at) and (known is None or (i.name, i.version) in known)
            ][:limit]
            return [self._claim(i, owner, lease_seconds) for i in found]

    async def add_signal(self, saga_id: str, name: str, payload: JSON, event: SagaEvent) -> bool:
        async with self._lock:
            self._expect(saga_id, SagaStatus.RUNNING)
            kept = self._signals.setdefault(saga_id, {})
            new = name not in kept
            if new:
                kept[name] = payload
                self._events[saga_id].append(event)
            self._wake(saga_id)
            return new

    async def signals(self, saga_id: str) -> dict[str, JSON]:
        return dict(self._signals.get(saga_id, {}))

    async def wake(self, saga_id: str) -> None:
        async with self._lock:
            self._wake(saga_id)

    def _wake(self, saga_id: str) -> None:
        instance = self._instances.get(saga_id)
        if (
            instance is not None
            and instance.owner is None
            and instance.status is SagaStatus.RUNNING
        ):
            self._instances[saga_id] = instance.evolve(lease_until=None)

    async def renew(
        self, *, owner: str, lease_seconds: float, saga_ids: Collection[str] | None = None
    ) -> int:
        async with self._lock:
            mine = [
                i
                for i in self._instances.values()
                if i.owner == owner
                and i.status.is_active
                and (saga_ids is None or i.saga_id in saga_ids)
            ]
            for instance in mine:
                self._instances[instance.saga_id] = instance.evolve(
                    lease_until=self._clock() + lease_seconds
                )
            return len(mine)

    async def on_release(self, wake: Callable[[], None]) -> None:
        return None  # one process: nobody else to wake

    async def release(self, *, owner: str) -> int:
        async with self._lock:
            mine = [i for i in self._instances.values() if i.owner == owner]
            for instance in mine:
                self._instances[instance.saga_id] = instance.evolve(owner=None, lease_until=None)
            return len(mine)

    async def reopen(
        self, saga_id: str, event: SagaEvent, *, owner: str, lease_seconds: float
    ) -> SagaInstance:
        async with self._lock:
            instance = self._instances.get(saga_id)
            if instance is None:
                raise SagaNotFound(f"no saga {saga_id!r}")
            if instance.status is not SagaStatus.FAILED:
                raise InvalidTransition(f"saga {saga_id} is {instance.status}, not failed")
            steps = tuple(
                s.evolve(compensation_attempts=0) if s.status is StepStatus.COMPENSATING else s
                for s in instance.steps
            )
            reopened = instance.evolve(
                status=SagaStatus.COMPENSATING,
                steps=steps,
                owner=owner,
                fence=instance.fence + 1,
                lease_until=self._clock() + lease_seconds,
                updated_at=self._clock(),
                revision=instance.revision + 1,
            )
            self._instances[saga_id] = reopened
            self._events[saga_id].append(event)
            return reopened

    async def request_cancel(self, saga_id: str, event: SagaEvent) -> SagaInstance:
        async with self._lock:
            instance = self._expect(saga_id, SagaStatus.RUNNING)
            flagged = instance.evolve(cancel_requested=True, updated_at=self._clock())
            self._instances[saga_id] = flagged
            self._events[saga_id].append(event)
            return flagged

    async def resolve(self, saga_id: str, event: SagaEvent) -> SagaInstance:
        async with self._lock:
            instance = self._expect(saga_id, SagaStatus.FAILED)
            resolved = instance.evolve(
                status=SagaStatus.COMPENSATED,
                updated_at=self._clock(),
                revision=instance.revision + 1,
            )
            self._instances[saga_id] = resolved
            self._events[saga_id].append(event)
            return resolved

    def _expect(self, saga_id: str, status: SagaStatus) -> SagaInstance:
        instance = self._instances.get(saga_id)
        if instance is None:
            raise SagaNotFound(f"no saga {saga_id!r}")
        if instance.status is not status:
            raise InvalidTransition(f"saga {saga_id} is {instance.status}, not {status}")
        return instance

    async def close(self) -> None:
        return None


def _parked(change: Transition, lease_until: float | None) -> float | None:
    """The lease after ``change``: its ``park_until`` when it parks the saga, else unchanged."""
    return lease_until if change.park_until is None else change.park_until


def _no_local_actions(action: object) -> JSON:
    raise StoreError("the memory store has no database to run a local action in")
