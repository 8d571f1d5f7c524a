"""Stuck sagas and the oldest active saga, by the same rule in SQL and in Python, per store."""

from __future__ import annotations

import time

from sagakit.records import SagaStatus
from sagakit.store import SagaStore
from sagakit.store.activity import Filters, StuckRule, activity, count_matching, stuck_reason
from tests.store.test_store import instance, put, stored

RULE = StuckRule(stuck_after=600.0, grace=5.0)


async def test_a_live_lease_is_not_stuck_an_expired_one_is_and_silence_is(
    store: SagaStore,
) -> None:
    """Lease 30 s: fine now, stuck 40 s on (lease), and 700 s on (no progress) too."""
    await put(store, instance("s1", name="order"), lease_seconds=30)
    await put(store, instance("s2", name="refund"), lease_seconds=30)
    await put(store, instance("done", status=SagaStatus.COMPLETED, owner=None))
    saga = await stored(store, "s1")
    now = time.time()

    assert stuck_reason(saga, now, RULE) is None
    assert (await activity(store, now, RULE)).stuck_by_name == {"order": 0, "refund": 0}
    later = now + 40
    reason = stuck_reason(saga, later, RULE)
    assert reason is not None
    assert reason.startswith("the lease of owner-a expired at")
    assert (await activity(store, later, RULE)).stuck_by_name == {"order": 1, "refund": 1}
    silent = stuck_reason(saga.evolve(owner=None, lease_until=None), now + 700, RULE)
    assert silent is not None
    assert silent.startswith("no progress since")


async def test_the_oldest_active_saga_is_the_first_started_still_active(store: SagaStore) -> None:
    """Finished sagas do not count; with no active saga there is no oldest."""
    assert (await activity(store, time.time(), RULE)).oldest_created_at is None
    await put(store, instance("old"))
    await put(store, instance("new"))
    await put(store, instance("over", status=SagaStatus.COMPENSATED, owner=None))
    oldest = (await activity(store, time.time(), RULE)).oldest_created_at
    assert oldest == (await stored(store, "old")).created_at


async def test_a_parked_saga_waiting_for_its_deadline_is_not_stuck() -> None:
    """No owner and a lease (deadline) still ahead: it waits on purpose, however long."""
    saga = instance("p", owner=None).evolve(lease_until=time.time() + 86400, updated_at=0.0)
    assert stuck_reason(saga, time.time(), RULE) is None


async def test_counts_follow_the_filters_on_every_store(store: SagaStore) -> None:
    """Name, key and creation time narrow the counts; every status is listed, zeros too."""
    await put(store, instance("a", name="order", business_key="k1"))
    await put(store, instance("b", name="order", business_key="k2"))
    await put(store, instance("c", name="refund", status=SagaStatus.COMPLETED, owner=None))
    zero = dict.fromkeys(SagaStatus, 0)
    created = (await stored(store, "a")).created_at

    assert await count_matching(store, Filters(name="order")) == {**zero, SagaStatus.RUNNING: 2}
    assert await count_matching(store, Filters(business_key="k2")) == {
        **zero,
        SagaStatus.RUNNING: 1,
    }
    assert await count_matching(store, Filters(name="refund")) == {
        **zero,
        SagaStatus.COMPLETED: 1,
    }
    assert await count_matching(store, Filters(created_after=created + 3600)) == zero
    assert await count_matching(store, Filters(created_before=created + 3600)) == {
        **zero,
        SagaStatus.RUNNING: 2,
        SagaStatus.COMPLETED: 1,
    }
