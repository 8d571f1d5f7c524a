"""Crash recovery: real ``sagakit`` processes killed with SIGKILL mid-saga, then restarted.

Every test counts effects in the participants' own tables (payments, reservations,
shipments, balances, stock), read straight from the SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest

from tests.processes import ADMIN_HEADERS, ServeProcess
from tests.recovery.conftest import Sagakit, wait_saga_finished

KILLED = -signal.SIGKILL

FORWARD_CRASHES = [
    "before_do:payment",
    "after_do:payment",
    "before_do:inventory",
    "after_do:inventory",
    "before_do:shipping",
    "after_do:shipping",
]
COMPENSATION_CRASHES = [
    "before_compensate:inventory",
    "after_compensate:inventory",
    "before_compensate:payment",
    "after_compensate:payment",
]


async def checkout_killed_at(sagakit: Sagakit, crash_at: str, order_id: str) -> str:
    """Check ``order_id`` out on a serve that kills itself at ``crash_at``; the saga's id."""
    doomed = await sagakit.serve(crash_at=crash_at)
    async with doomed.client() as client:
        with pytest.raises(httpx.TransportError):
            await client.post(f"/checkout/{order_id}")
    assert await doomed.wait(10.0) == KILLED, doomed.output()
    [saga_id] = sagakit.saga_ids(order_id)
    if crash_at.startswith("before_"):
        # After an action, its result may already be committed with the action itself.
        assert sagakit.active_sagas() == 1, "the crash should leave the saga unfinished"
    return saga_id


def inbox(sagakit: Sagakit, table: str) -> list[tuple[object, ...]]:
    """Every (idempotency key, status) row of a participant's table."""
    return sagakit.rows(f"SELECT idempotency_key, status FROM {table} ORDER BY idempotency_key")


@pytest.mark.parametrize("crash_at", FORWARD_CRASHES)
async def test_checkout_killed_mid_saga_completes_once_after_restart(
    sagakit: Sagakit, crash_at: str
) -> None:
    """A serve killed anywhere in order1's checkout is restarted and completes it, charging once."""
    saga_id = await checkout_killed_at(sagakit, crash_at, "order1")

    restarted = await sagakit.serve()
    async with restarted.client() as client:
        saga = await wait_saga_finished(client, saga_id)
        order = (await client.get("/orders/order1")).json()
        again = await client.post("/checkout/order1")

    assert saga["status"] == "completed"
    assert order["status"] == "completed"
    assert again.status_code == 200
    assert again.json()["saga_id"] == saga_id
    assert inbox(sagakit, "payments") == [(f"{saga_id}:payment", "charged")]
    assert inbox(sagakit, "reservations") == [(f"{saga_id}:inventory", "reserved")]
    assert inbox(sagakit, "shipments") == [(f"{saga_id}:shipping", "shipped")]
    assert sagakit.balance("user1") == 100 - 20
    assert sagakit.stock("item1") == 5 - 2
    assert sagakit.statuses() == {"completed": 1}


@pytest.mark.parametrize("crash_at", COMPENSATION_CRASHES)
async def test_compensation_killed_midway_finishes_once_after_restart(
    sagakit: Sagakit, crash_at: str
) -> None:
    """A serve killed while compensating order3 is restarted and refunds and restocks it once."""
    saga_id = await checkout_killed_at(sagakit, crash_at, "order3")

    restarted = await sagakit.serve()
    async with restarted.client() as client:
        saga = await wait_saga_finished(client, saga_id)
        order = (await client.get("/orders/order3")).json()

    assert saga["status"] == "compensated"
    assert order["status"] == "failed"
    assert inbox(sagakit, "payments") == [(f"{saga_id}:payment", "refunded")]
    assert inbox(sagakit, "reservations") == [(f"{saga_id}:inventory", "released")]
    # A refused shipment may leave a 'rejected' row or none at all; never a 'shipped' one.
    assert sagakit.integer("SELECT count(*) FROM shipments WHERE status = 'shipped'") == 0
    assert sagakit.balance("user1") == 100
    assert sagakit.stock("item2") == 3
    assert sagakit.statuses() == {"compensated": 1}


async def test_checkouts_sent_during_recovery_join_the_recovering_saga(sagakit: Sagakit) -> None:
    """Twenty checkouts of order1 sent as a killed serve restarts all join its one saga."""
    saga_id = await checkout_killed_at(sagakit, "after_do:payment", "order1")

    restarted = await sagakit.serve()
    async with restarted.client() as client:
        answers = await asyncio.gather(*(client.post("/checkout/order1") for _ in range(20)))

    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers]
    assert {a.json()["saga_id"] for a in answers} == {saga_id}
    assert inbox(sagakit, "payments") == [(f"{saga_id}:payment", "charged")]
    assert sagakit.balance("user1") == 100 - 20
    assert sagakit.statuses() == {"completed": 1}


async def test_a_second_serve_takes_over_the_saga_of_a_killed_one(sagakit: Sagakit) -> None:
    """A serve running beside one that is killed mid-saga finishes that saga once its lease ends."""
    doomed = await sagakit.serve(crash_at="before_do:shipping")
    survivor = await sagakit.serve()
    async with doomed.client() as client:
        with pytest.raises(httpx.TransportError):
            await client.post("/checkout/order1")
    assert await doomed.wait(10.0) == KILLED, doomed.output()
    [saga_id] = sagakit.saga_ids("order1")

    async with survivor.client() as client:
        saga = await wait_saga_finished(client, saga_id)
        again = await client.post("/checkout/order1")

    assert saga["status"] == "completed"
    assert (again.status_code, again.json()["saga_id"]) == (200, saga_id)
    claims = sagakit.rows(
        "SELECT detail FROM saga_events WHERE saga_id = ? AND type = 'saga_claimed'", (saga_id,)
    )
    assert any(f":{survivor.popen.pid}:" in str(detail) for (detail,) in claims), claims
    assert inbox(sagakit, "payments") == [(f"{saga_id}:payment", "charged")]
    assert inbox(sagakit, "shipments") == [(f"{saga_id}:shipping", "shipped")]
    assert sagakit.balance("user1") == 100 - 20
    assert sagakit.stock("item1") == 5 - 2


# -- conservation across several crashes --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """An order to create and how its checkout must end."""

    order_id: str
    user_id: str
    balance: int
    items: dict[str, int]
    address: str
    outcome: str  # the order's final status: "completed" or "failed"


def shop_plan() -> list[Plan]:
    """Forty orders: most complete; some lack money, stock or an address."""
    plans: list[Plan] = []
    for i in range(24):
        plans.append(
            Plan(f"ok-{i:02d}", f"buyer-{i:02d}", 100, {"widget": 1 + i % 2}, "1 Road", "completed")
        )
    # Three of six fit the scarce item's stock: which three is a race; tallied below.
    for i in range(6):
        plans.append(Plan(f"scarce-{i}", f"hunter-{i}", 100, {"scarce": 1}, "2 Road", "either"))
    for i in range(5):
        plans.append(Plan(f"noaddr-{i}", f"drifter-{i}", 100, {"widget": 2}, "", "failed"))
    for i in range(5):
        plans.append(Plan(f"poor-{i}", f"pauper-{i}", 5, {"widget": 1}, "3 Road", "failed"))
    return plans


async def create_shop(client: httpx.AsyncClient, plans: list[Plan]) -> None:
    """Create the items, the users and the orders of ``plans`` through the API."""
    for item in (
        {"item_id": "widget", "stock": 100, "price": 10},
        {"item_id": "scarce", "stock": 3, "price": 10},
    ):
        response = await client.post("/items", json=item, headers=ADMIN_HEADERS)
        assert response.status_code == 201, response.text
    users = await asyncio.gather(
        *(
            client.post(
                "/users", json={"user_id": p.user_id, "balance": p.balance}, headers=ADMIN_HEADERS
            )
            for p in plans
        )
    )
    assert [r.status_code for r in users] == [201] * len(plans)
    orders = await asyncio.gather(
        *(
            client.post(
                "/orders",
                json={
                    "order_id": p.order_id,
                    "user_id": p.user_id,
                    "items": p.items,
                    "address": p.address,
                },
            )
            for p in plans
        )
    )
    assert [r.status_code for r in orders] == [201] * len(plans)


async def checkout_all(server: ServeProcess, order_ids: list[str], *, wait: bool) -> None:
    """Send every checkout at once; a connection cut by a crash is tolerated, nothing else."""
    async with server.client() as client:
        answers = await asyncio.gather(
            *(
                client.post(f"/checkout/{order_id}", params={"wait": str(wait).lower()})
                for order_id in order_ids
            ),
            return_exceptions=True,
        )
    for answer in answers:
        if isinstance(answer, httpx.TransportError):
            continue
        if isinstance(answer, BaseException):
            raise answer
        assert answer.status_code in ((200, 400) if wait else (202, 200, 400)), answer.text


def ledger(sagakit: Sagakit) -> tuple[int, int, int, int]:
    """Total balance, total stock, sum of charged payments, and units held by reservations."""
    balance = sagakit.integer("SELECT coalesce(sum(balance), 0) FROM users")
    stock = sagakit.integer("SELECT coalesce(sum(stock), 0) FROM items")
    charged = sagakit.integer(
        "SELECT coalesce(sum(amount), 0) FROM payments WHERE status = 'charged'"
    )
    held = 0
    for (lines,) in sagakit.rows("SELECT lines FROM reservations WHERE status = 'reserved'"):
        assert isinstance(lines, str)
        held += sum(json.loads(lines).values())
    return balance, stock, charged, held


async def test_money_and_stock_are_conserved_across_several_crashes(sagakit: Sagakit) -> None:
    """Forty checkouts through two SIGKILLed serves and a clean restart conserve money and stock."""
    plans = shop_plan()
    first = await sagakit.serve(crash_at="after_do:inventory#5")
    async with first.client() as client:
        await create_shop(client, plans)
    initial_balance, initial_stock, _, _ = ledger(sagakit)

    # Only the second batch compensates inventory (no address), so the second serve cannot
    # reach its crash point by recovering the first batch before it answers /healthz.
    second_batch = [p.order_id for p in plans if not p.address]
    first_batch = [p.order_id for p in plans if p.address]
    second_batch += first_batch[1::2]
    first_batch = first_batch[::2]
    await checkout_all(first, first_batch, wait=False)
    assert await first.wait(15.0) == KILLED, first.output()

    second = await sagakit.serve(crash_at="before_compensate:inventory#2")
    await checkout_all(second, second_batch, wait=False)
    assert await second.wait(15.0) == KILLED, second.output()

    last = await sagakit.serve()
    lost = [p.order_id for p in plans if not sagakit.saga_ids(p.order_id)]
    await checkout_all(last, lost, wait=True)
    await sagakit.wait_all_finished(timeout=30.0)

    balance, stock, charged, held = ledger(sagakit)
    assert initial_balance == balance + charged
    assert initial_stock == stock + held
    async with last.client() as client:
        statuses = {
            p.order_id: (await client.get(f"/orders/{p.order_id}")).json()["status"] for p in plans
        }
    for plan in plans:
        [saga_id] = sagakit.saga_ids(plan.order_id)
        payment = sagakit.rows(
            "SELECT status FROM payments WHERE idempotency_key = ?", (f"{saga_id}:payment",)
        )
        if statuses[plan.order_id] == "completed":
            assert payment == [("charged",)], plan.order_id
        else:
            assert ("charged",) not in payment, plan.order_id
        if plan.outcome != "either":
            assert statuses[plan.order_id] == plan.outcome, plan.order_id
    tally = Counter(statuses[p.order_id] for p in plans if p.outcome == "either")
    assert tally == {"completed": 3, "failed": 3}
    assert sagakit.integer("SELECT count(*) FROM shipments WHERE status = 'shipped'") == 27
    assert sagakit.statuses() == {"completed": 27, "compensated": 13}


# -- signals and the worker ---------------------------------------------------------------


async def test_sigterm_stops_serve_gracefully_and_releases_its_leases(sagakit: Sagakit) -> None:
    """SIGTERM makes serve run its shutdown and exit within five seconds, holding no lease."""
    server = await sagakit.serve()
    async with server.client() as client:
        assert (await client.post("/checkout/order1")).status_code == 200
    # uvicorn re-raises the SIGTERM it caught once shut down, so -SIGTERM is a clean exit too.
    assert await server.terminate(timeout=5.0) in (0, -signal.SIGTERM), server.output()
    assert "Application shutdown complete" in server.output()
    # SQLite removes the write-ahead log when the last connection closes: the store was closed.
    assert not sagakit.db_path.with_name("shop.db-wal").exists()
    assert sagakit.integer("SELECT count(*) FROM saga_instances WHERE owner IS NOT NULL") == 0


@pytest.mark.parametrize(
    ("crash_at", "order_id", "status"),
    [
        ("after_do:inventory", "order1", "completed"),
        ("after_compensate:inventory", "order3", "compensated"),
    ],
)
async def test_worker_alone_finishes_a_saga_left_by_a_killed_serve(
    sagakit: Sagakit, crash_at: str, order_id: str, status: str
) -> None:
    """A lone ``sagakit worker`` takes over and finishes the saga of a serve killed mid-saga."""
    saga_id = await checkout_killed_at(sagakit, crash_at, order_id)

    worker = sagakit.worker()
    await sagakit.wait_all_finished(timeout=15.0)
    assert await worker.terminate(timeout=5.0) == 0, worker.output()

    assert sagakit.statuses() == {status: 1}
    charged = 20 if status == "completed" else 0
    assert sagakit.balance("user1") == 100 - charged
    assert sagakit.stock("item1") == 5 - (2 if status == "completed" else 0)
    assert sagakit.stock("item2") == 3
    expected = "charged" if status == "completed" else "refunded"
    assert inbox(sagakit, "payments") == [(f"{saga_id}:payment", expected)]
