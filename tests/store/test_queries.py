"""Listing queries: every filter of ``list_sagas``, alone and combined, on every backend."""

from __future__ import annotations

from typing import Final, TypedDict, Unpack

import pytest

from sagakit.records import SagaInstance, SagaStatus, Transition
from sagakit.store import SagaStore
from tests.store.test_store import instance, put

T0: Final = 1_700_000_000.0  # the first saga's created_at; each next one is a second later
#: The statuses of the last six sagas (the six before them are compensated, so that every
#: (name, key) pair may hold a second saga: the store allows one live saga per key).
LATE: Final = (
    SagaStatus.RUNNING,
    SagaStatus.COMPLETED,
    SagaStatus.FAILED,
    SagaStatus.COMPENSATED,
    SagaStatus.COMPLETED,
    SagaStatus.RUNNING,
)


class Filters(TypedDict, total=False):
    """The filters of ``list_sagas``."""

    status: SagaStatus
    name: str
    business_key: str
    created_after: float
    created_before: float


async def seed(store: SagaStore) -> list[SagaInstance]:
    """Twelve sagas ``s-00`` .. ``s-11``: names alternate order/refund, keys cycle k0, k1, k2."""
    made = []
    for i in range(12):
        saga = instance(
            f"s-{i:02d}",
            name=("order", "refund")[i % 2],
            business_key=f"k{i % 3}",
            status=SagaStatus.COMPENSATED if i < 6 else LATE[i - 6],
        )
        made.append(await put(store, saga.evolve(created_at=T0 + i)))
    return made


def expected(made: list[SagaInstance], filters: Filters) -> list[str]:
    """The ids that ``filters`` should list, newest first, computed from what was seeded."""
    after = filters.get("created_after", float("-inf"))
    before = filters.get("created_before", float("inf"))
    return [
        s.saga_id
        for s in reversed(made)
        if filters.get("status") in (None, s.status)
        and filters.get("name") in (None, s.name)
        and filters.get("business_key") in (None, s.business_key)
        and after <= s.created_at < before
    ]


async def listed(store: SagaStore, **filters: Unpack[Filters]) -> list[str]:
    """The ids of the first page (large enough for everything) of ``filters``."""
    page = await store.list_sagas(limit=100, **filters)
    assert page.next_cursor is None
    return [s.saga_id for s in page.sagas]


async def walk(store: SagaStore, limit: int, **filters: Unpack[Filters]) -> list[list[str]]:
    """Every page of ``filters`` with ``limit``, following ``next_cursor`` to the end."""
    pages: list[list[str]] = []
    cursor: str | None = None
    for _ in range(30):  # a bound, so a cursor that never ends fails instead of hanging
        page = await store.list_sagas(limit=limit, cursor=cursor, **filters)
        pages.append([s.saga_id for s in page.sagas])
        cursor = page.next_cursor
        if cursor is None:
            return pages
    raise AssertionError("the cursor never ran out")


async def test_list_sagas_by_name_lists_only_that_saga_newest_first(store: SagaStore) -> None:
    """``name`` keeps the sagas of that definition, newest first."""
    await seed(store)

    assert await listed(store, name="refund") == ["s-11", "s-09", "s-07", "s-05", "s-03", "s-01"]
    assert await listed(store, name="nothing") == []


async def test_list_sagas_by_business_key_lists_every_saga_of_that_key(store: SagaStore) -> None:
    """``business_key`` keeps the sagas started with that key, whatever their name."""
    await seed(store)

    assert await listed(store, business_key="k1") == ["s-10", "s-07", "s-04", "s-01"]
    assert await listed(store, business_key="k9") == []


async def test_list_sagas_created_after_includes_its_bound(store: SagaStore) -> None:
    """``created_after`` lists the sagas created at or after that instant."""
    await seed(store)

    assert await listed(store, created_after=T0 + 9) == ["s-11", "s-10", "s-09"]
    assert await listed(store, created_after=T0 + 8.5) == ["s-11", "s-10", "s-09"]
    assert await listed(store, created_after=T0 + 12) == []


async def test_list_sagas_created_before_excludes_its_bound(store: SagaStore) -> None:
    """``created_before`` lists the sagas created strictly before that instant."""
    await seed(store)

    assert await listed(store, created_before=T0 + 3) == ["s-02", "s-01", "s-00"]
    assert await listed(store, created_before=T0) == []


async def test_list_sagas_adjacent_time_ranges_split_the_sagas_without_overlap(
    store: SagaStore,
) -> None:
    """``[a, t)`` and ``[t, b)`` together list every saga of ``[a, b)`` exactly once."""
    await seed(store)

    early = await listed(store, created_after=T0 + 2, created_before=T0 + 6)
    late = await listed(store, created_after=T0 + 6, created_before=T0 + 10)

    assert early == ["s-05", "s-04", "s-03", "s-02"]
    assert late == ["s-09", "s-08", "s-07", "s-06"]


async def test_list_sagas_combines_every_filter_with_and(store: SagaStore) -> None:
    """Several filters together list only the sagas that match all of them."""
    await seed(store)

    assert await listed(store, name="order", business_key="k0") == ["s-06", "s-00"]
    assert await listed(store, status=SagaStatus.RUNNING, name="refund") == ["s-11"]
    assert await listed(
        store,
        status=SagaStatus.COMPENSATED,
        name="order",
        created_after=T0 + 2,
        created_before=T0 + 10,
    ) == ["s-04", "s-02"]
    assert await listed(store, status=SagaStatus.FAILED, business_key="k0") == []


@pytest.mark.parametrize(
    "filters",
    [
        {"name": "order"},
        {"business_key": "k2"},
        {"status": SagaStatus.COMPENSATED, "name": "refund"},
        {"created_after": T0 + 1, "created_before": T0 + 11},
        {"name": "order", "created_after": T0 + 3},
        {"status": SagaStatus.COMPLETED, "business_key": "k1", "created_before": T0 + 11},
    ],
    ids=lambda f: "+".join(f),
)
@pytest.mark.parametrize("limit", [1, 2, 5])
async def test_list_sagas_cursor_with_filters_walks_every_match_once(
    store: SagaStore, filters: Filters, limit: int
) -> None:
    """Following ``next_cursor`` with the same filters visits each match once, newest first."""
    made = await seed(store)

    pages = await walk(store, limit, **filters)

    want = expected(made, filters)
    assert want, "a filter that matches nothing proves nothing here"
    assert [i for page in pages for i in page] == want
    assert all(len(page) == limit for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= limit


async def test_list_sagas_status_filter_sees_the_latest_status(store: SagaStore) -> None:
    """A filtered listing sees each saga's latest status, not the one it started with."""
    await seed(store)
    await store.transition(
        Transition(saga_id="s-06", fence=1, status=SagaStatus.COMPLETED, release=True)
    )

    assert await listed(store, status=SagaStatus.RUNNING) == ["s-11"]
    assert await listed(store, status=SagaStatus.COMPLETED, name="order") == ["s-10", "s-06"]
