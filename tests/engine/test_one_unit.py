"""One durable unit per all-local saga: the checkout in one transaction, on SQLite and PostgreSQL.

Each test runs the real checkout saga (its local actions and local compensations) over the
demo data, with the unit (the default without a probe) and, where it compares, with the
per-transition writes the unit replaces: the history, the rows and the effects must be the
same, so that the API, the dashboard and the metrics see exactly what they saw before.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, SagaInstance, SagaStatus, StepRecord
from sagakit.retry import RetryPolicy
from sagakit.saga import Saga, Step, StepContext
from sagakit.service import opened_stores
from sagakit.shop.base import ShopStore
from sagakit.shop.checkout import checkout_input
from sagakit.shop.local_participants import checkout_saga
from sagakit.store import SagaStore
from sagakit.store.postgres import PostgresAction
from sagakit.store.sqlite import SqliteAction, SqliteStore
from tests.conftest import _empty, _run_apart
from tests.history import Event, violations

History = list[tuple[str, str | None, int | None]]


@dataclass
class Shop:
    """A saga store and the demo shop in its database."""

    store: SagaStore
    shop: ShopStore


@contextlib.asynccontextmanager
async def demo_shop(url: str) -> AsyncIterator[Shop]:
    """The stores at ``url``, migrated, with the demo users, items and orders."""
    async with opened_stores(url) as (store, shop):
        await shop.load_demo_data()
        yield Shop(store, shop)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A fresh database of each backend that can run local actions."""
    return sqlite_url if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


async def checkout(orch: SagaOrchestrator, shop: ShopStore, order_id: str) -> SagaInstance:
    """Check out one demo order and wait for its end."""
    order = await shop.get_order(order_id)
    assert order is not None
    handle = await orch.start("checkout", checkout_input(order), business_key=order_id)
    return await handle.result(timeout=10)


async def history(store: SagaStore, saga_id: str) -> History:
    """The saga's events as (type, step, attempt)."""
    return [(e.type, e.step, e.attempt) for e in await store.events(saga_id)]


async def run_demo(url: str, *, one_unit: bool) -> dict[str, tuple[SagaInstance, History]]:
    """Each demo order checked out once, in order: its ended saga and its history."""
    ended = {}
    async with demo_shop(url) as opened:
        orch = SagaOrchestrator(opened.store, [checkout_saga(opened.shop)], one_unit=one_unit)
        for order_id in ("order1", "order2", "order3"):
            saga = await checkout(orch, opened.shop, order_id)
            stored = await opened.store.get(saga.saga_id)
            assert stored == saga, "the answer is what the store holds"
            ended[order_id] = (saga, await history(opened.store, saga.saga_id))
        await orch.shutdown()
    return ended


async def test_demo_checkouts_as_one_unit_leave_the_same_history_rows_and_effects(
    url: str,
) -> None:
    """Completed, refused at payment, refused at shipping: as with per-transition writes."""
    unit = await run_demo(url, one_unit=True)
    if url.startswith("sqlite"):
        other = url + "-apart"
    else:  # PostgreSQL: the same database, emptied of sagas and shop rows
        _run_apart(_empty(url))
        other = url
    classic = await run_demo(other, one_unit=False)

    for order_id, (saga, events) in unit.items():
        before, events_before = classic[order_id]
        assert events == events_before, order_id
        assert (saga.status, saga.error, saga.failed_step) == (
            before.status,
            before.error,
            before.failed_step,
        )
        assert [_row(s, saga.saga_id) for s in saga.steps] == [
            _row(s, before.saga_id) for s in before.steps
        ]
        assert violations(saga.saga_id, [Event(*e) for e in events]) == []
    assert [unit[o][0].status for o in unit] == [
        SagaStatus.COMPLETED,
        SagaStatus.COMPENSATED,
        SagaStatus.COMPENSATED,
    ]


def _row(step: StepRecord, saga_id: str) -> tuple[object, ...]:
    """What must match of a step row, with the saga's id taken out of its result's keys."""
    result = orjson.dumps(step.result, option=orjson.OPT_SORT_KEYS).decode()
    result = result.replace(saga_id, "<saga>")
    return (step.name, step.status, step.attempts, step.compensation_attempts, result, step.error)


async def test_a_checkout_and_its_compensations_are_one_sqlite_write_job(sqlite_url: str) -> None:
    """A completed checkout and one compensated at shipping each cost one write job, one commit."""
    async with demo_shop(sqlite_url) as opened:
        assert isinstance(opened.store, SqliteStore)
        jobs = count_write_jobs(opened.store)
        orch = SagaOrchestrator(opened.store, [checkout_saga(opened.shop)])
        completed = await checkout(orch, opened.shop, "order1")
        after_first = jobs[0]
        compensated = await checkout(orch, opened.shop, "order3")
        ledger = await opened.shop.ledger()

    assert (completed.status, compensated.status) == (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)
    assert (after_first, jobs[0]) == (1, 2)
    assert ledger.charged == 20  # order1's payment; order3's was refunded within its unit


def count_write_jobs(store: SqliteStore) -> list[int]:
    """Count every job given to ``store``'s writer from now on (a one-item list)."""
    jobs = [0]
    write = store.db.write

    async def counting(work: Any) -> Any:
        jobs[0] += 1
        return await write(work)

    store.db.write = counting  # type: ignore[method-assign]
    return jobs


class Remote(Step):
    """A step with no local action: the saga leaves the unit when it gets here."""

    def __init__(self, name: str, *, errors: int = 0) -> None:
        self.name = name
        self.calls: list[int] = []

    async def do(self, ctx: StepContext) -> JSON:
        self.calls.append(ctx.attempt)
        return {"sent": ctx.results["payment"]}


async def test_saga_leaves_the_unit_at_a_step_that_is_not_local(url: str) -> None:
    """Payment commits with the saga's start; the remote step then runs as before, once."""
    async with demo_shop(url) as opened:
        payment = checkout_saga(opened.shop).steps[0]
        remote = Remote("notify")
        orch = SagaOrchestrator(opened.store, [Saga("checkout", [payment, remote])])
        saga = await checkout(orch, opened.shop, "order1")
        events = await history(opened.store, saga.saga_id)
        await orch.shutdown()

    assert saga.status is SagaStatus.COMPLETED
    assert remote.calls == [1]
    assert events == [
        ("saga_started", "payment", 1),
        ("step_succeeded", "payment", 1),
        ("step_started", "notify", 1),
        ("step_succeeded", "notify", 1),
        ("saga_completed", None, None),
    ]


class Flaky(Step):
    """A local step of the demo shop's payment whose first action raises after charging."""

    def __init__(self, shop: ShopStore) -> None:
        self.inner = checkout_saga(shop).steps[0]
        self.name = self.inner.name
        self.retry = RetryPolicy(max_attempts=3, initial_delay=0.001)
        self.failures = 1

    def local_action(self, ctx: StepContext, store: object) -> object | None:
        action = self.inner.local_action(ctx, store)
        if action is None or not self.failures:
            return action
        self.failures -= 1
        assert isinstance(action, SqliteAction | PostgresAction)
        return _raising_after(action)


def _raising_after(action: SqliteAction | PostgresAction) -> object:
    """``action``, raising once it has written its effect (which must be rolled back)."""
    if isinstance(action, SqliteAction):

        def run_lite(conn: Any) -> JSON:
            action.run(conn)
            raise RuntimeError("disk on fire")

        return SqliteAction(action.db, run_lite)

    async def run_pg(conn: Any) -> JSON:
        await action.run(conn)
        raise RuntimeError("disk on fire")

    return PostgresAction(action.db, run_pg)


async def test_transient_error_in_the_unit_is_rolled_back_and_retried_by_the_driver(
    url: str,
) -> None:
    """The failed attempt's effect is rolled back; the driver then runs the step again."""
    async with demo_shop(url) as opened:
        steps = checkout_saga(opened.shop).steps
        orch = SagaOrchestrator(opened.store, [Saga("checkout", [Flaky(opened.shop), *steps[1:]])])
        saga = await checkout(orch, opened.shop, "order1")
        events = await history(opened.store, saga.saga_id)
        ledger = await opened.shop.ledger()
        await orch.shutdown()

    assert saga.status is SagaStatus.COMPLETED
    if url.startswith("sqlite"):  # the action's savepoint was rolled back; the unit left
        retried = [("step_retry", "payment", 1), ("step_succeeded", "payment", 2)]
    else:  # PostgreSQL rolls the whole unit back and starts the saga the ordinary way
        retried = [("step_succeeded", "payment", 1)]
    assert events[: 1 + len(retried)] == [("saga_started", "payment", 1), *retried]
    assert saga.steps[0].attempts == len(retried)
    assert ledger.charged == 20  # charged once: the first attempt's charge was rolled back
    assert violations(saga.saga_id, [Event(*e) for e in events]) == []
