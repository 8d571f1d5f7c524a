"""Fencing against a driver that wakes from a stall, on every store.

The scenario an adversarial probe found on PostgreSQL, replayed with controlled pauses
instead of SIGSTOP: process A's driver stalls inside a step past its lease; process B claims
the saga and moves it on; B stalls in turn; A's worker claims the saga back. A's old driver,
still alive, must not write over what B recorded: the saga goes on from the stored state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sagakit.errors import LeaseLost
from sagakit.records import JSON, SagaEvent, SagaStatus, StepStatus, Transition
from sagakit.saga import StepContext
from sagakit.store import SagaStore
from tests.engine.test_orchestrator import SAGA, Call, Harness, Journal, Scripted
from tests.history import Event, violations

LEASE = 0.2
#: Long enough for a lease of ``LEASE`` seconds to run out, on the host's or the database's clock.
PAST_LEASE = 0.35


class StallsOnce(Scripted):
    """A step whose first call waits until the test opens its gate; later calls return."""

    def __init__(self, name: str, journal: Journal) -> None:
        super().__init__(name, journal)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def do(self, ctx: StepContext) -> JSON:
        self.journal.calls.append(Call("do", ctx))
        if not self.entered.is_set():
            self.entered.set()
            await self.gate.wait()
        return f"{self.name} done"


@pytest.fixture
async def harness(store: SagaStore) -> AsyncIterator[Harness]:
    """A harness on each backend in turn."""
    made = Harness(store)
    try:
        yield made
    finally:
        await made.close()


async def history_violations(harness: Harness, saga_id: str) -> list[str]:
    """Every breach of the history property by the saga, its stored rows included."""
    stored = await harness.store.get(saga_id)
    assert stored is not None
    events = [Event(e.type, e.step, e.attempt) for e in await harness.store.events(saga_id)]
    steps = {s.name: s.status.value for s in stored.steps}
    return violations(saga_id, events, status=stored.status.value, steps=steps)


async def test_driver_waking_after_another_owner_moved_on_never_writes_over_it(
    harness: Harness,
) -> None:
    """A claims back a saga B moved on: A's stalled driver is stopped, a fresh drive finishes it."""
    payment = StallsOnce("payment", harness.journal)
    shipping = StallsOnce("shipping", harness.journal)
    steps = (payment, harness.step("inventory"), shipping)
    a = harness.orchestrator(*steps, owner="process-a", lease_seconds=LEASE)
    b = harness.orchestrator(*steps, owner="process-b", lease_seconds=LEASE)
    started = await a.start(SAGA, {"order_id": "o-1"})
    saga_id = started.instance.saga_id
    await asyncio.wait_for(payment.entered.wait(), 5.0)
    await asyncio.sleep(PAST_LEASE)  # A is stalled in payment; its lease runs out

    assert await b.recover() == 1  # fence 2: B pays again, reserves stock, starts shipping
    await asyncio.wait_for(shipping.entered.wait(), 5.0)
    await asyncio.sleep(PAST_LEASE)  # now B stalls in shipping and its lease runs out
    assert await a.recover() == 1  # fence 3: A's worker claims the saga back
    payment.gate.set()  # A's old driver wakes, holding "payment running, attempt 1"
    shipping.gate.set()  # and so does B's, holding "shipping running, attempt 1"
    done = await a.wait(saga_id, timeout=5.0)

    assert done.status is SagaStatus.COMPLETED
    assert await history_violations(harness, saga_id) == []
    assert [s.status for s in done.steps] == [StepStatus.SUCCEEDED] * 3
    assert harness.journal.count("do", "inventory") == 1  # B's, never A's stale rerun
    assert done.steps[0].attempts == 2  # B's attempt stands
    with pytest.raises(LeaseLost):
        await b.drive(started.instance)  # B's driver found its fence gone


async def test_driver_adopted_when_nobody_else_held_the_saga_keeps_its_attempt(
    harness: Harness,
) -> None:
    """A process claiming back its own stalled saga, untouched meanwhile, lets its driver go on."""
    payment = StallsOnce("payment", harness.journal)
    a = harness.orchestrator(payment, harness.step("inventory"), lease_seconds=LEASE)
    started = await a.start(SAGA, {"order_id": "o-1"})
    await asyncio.wait_for(payment.entered.wait(), 5.0)
    await asyncio.sleep(PAST_LEASE)

    assert await a.recover() == 1
    payment.gate.set()
    done = await a.wait(started.instance.saga_id, timeout=5.0)

    assert done.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "payment") == 1  # adopted: no rerun
    assert done.steps[0].attempts == 1
    assert await history_violations(harness, started.instance.saga_id) == []


async def test_stale_write_with_the_current_fence_but_an_old_state_is_refused(
    harness: Harness,
) -> None:
    """The store refuses a transition whose fence is current but whose revision is not."""
    a = harness.orchestrator(StallsOnce("payment", harness.journal), lease_seconds=LEASE)
    started = await a.start(SAGA, {"order_id": "o-1"})
    saga_id = started.instance.saga_id
    await asyncio.sleep(PAST_LEASE)
    claimed = await harness.store.claim(saga_id, owner="process-b", lease_seconds=30.0)
    assert claimed is not None
    moved = await harness.store.transition(_complete(claimed.fence, claimed.revision, saga_id))

    with pytest.raises(LeaseLost):
        await harness.store.transition(_complete(claimed.fence, claimed.revision, saga_id))
    assert moved is False
    stored = await harness.store.get(saga_id)
    assert stored is not None
    assert stored.revision == claimed.revision + 1


def _complete(fence: int, revision: int, saga_id: str) -> Transition:
    """A transition that changes nothing but the history, written at ``fence`` and ``revision``."""
    return Transition(
        saga_id=saga_id,
        fence=fence,
        revision=revision,
        status=SagaStatus.RUNNING,
        events=(SagaEvent(type="step_retry", step="payment", attempt=1),),
    )
