"""Concurrency against a real ``sagakit serve`` subprocess (uvicorn, SQLite), over HTTP.

The requests are sent at once from one asyncio client; the effects are counted in the
participants' tables read straight from the SQLite file.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.processes import ADMIN_HEADERS, PATIENT, create_buyers
from tests.recovery.conftest import Sagakit


async def test_concurrent_checkouts_of_one_order_share_one_saga_and_charge_once(
    sagakit: Sagakit,
) -> None:
    """Fifty simultaneous checkouts of order1 all answer 200 with one saga and one charge."""
    server = await sagakit.serve(env=PATIENT)
    async with server.client() as client:
        answers = await asyncio.gather(*(client.post("/checkout/order1") for _ in range(50)))

    assert [a.status_code for a in answers] == [200] * 50, [a.text for a in answers]
    saga_ids = {a.json()["saga_id"] for a in answers}
    assert saga_ids == set(sagakit.saga_ids("order1"))
    [saga_id] = saga_ids
    assert sagakit.rows("SELECT idempotency_key, status FROM payments") == [
        (f"{saga_id}:payment", "charged")
    ]
    assert sagakit.integer("SELECT count(*) FROM shipments WHERE status = 'shipped'") == 1
    assert sagakit.balance("user1") == 80
    assert sagakit.stock("item1") == 3


async def test_hundred_buyers_for_ten_in_stock_leave_ten_winners_and_refund_the_rest(
    sagakit: Sagakit,
) -> None:
    """A hundred concurrent buyers of ten units: ten are charged once, ninety refunded in full."""
    server = await sagakit.serve(env=PATIENT)
    async with server.client() as client:
        users = await create_buyers(client, 100, balance=50)
        answers = await asyncio.gather(*(client.post(f"/checkout/order-{u}") for u in users))
        item = (await client.get("/items/hot")).json()

    assert Counter(a.status_code for a in answers) == {200: 10, 400: 90}
    for answer in answers:
        if answer.status_code == 400:
            body = answer.json()
            assert (body["status"], body["error"], body["failed_step"]) == (
                "compensated",
                "Not enough stock",
                "inventory",
            )
    assert item["stock"] == 0
    assert sagakit.stock("hot") == 0
    winners = {a.json()["order_id"].removeprefix("order-") for a in answers if a.status_code == 200}
    for user in users:
        [saga_id] = sagakit.saga_ids(f"order-{user}")
        payment = sagakit.rows(
            "SELECT status, amount FROM payments WHERE idempotency_key = ?", (f"{saga_id}:payment",)
        )
        if user in winners:
            assert (sagakit.balance(user), payment) == (40, [("charged", 10)]), user
        else:
            assert (sagakit.balance(user), payment) == (50, [("refunded", 10)]), user
    assert sagakit.integer("SELECT count(*) FROM payments WHERE status = 'charged'") == 10
    assert sagakit.integer("SELECT count(*) FROM reservations WHERE status = 'reserved'") == 10


async def test_fifty_orders_against_one_balance_charge_only_what_it_covers(
    sagakit: Sagakit,
) -> None:
    """Fifty concurrent orders of 10 from a balance of 100: ten are charged, forty refused."""
    server = await sagakit.serve(env=PATIENT)
    async with server.client() as client:
        for path, body in (
            ("/users", {"user_id": "spender", "balance": 100}),
            ("/items", {"item_id": "cheap", "stock": 1000, "price": 10}),
        ):
            assert (await client.post(path, json=body, headers=ADMIN_HEADERS)).status_code == 201
        orders = [f"spend-{i:02d}" for i in range(50)]
        for order_id in orders:
            order = {
                "order_id": order_id,
                "user_id": "spender",
                "items": {"cheap": 1},
                "address": "x",
            }
            assert (await client.post("/orders", json=order)).status_code == 201
        answers = await asyncio.gather(*(client.post(f"/checkout/{o}") for o in orders))

    assert Counter(a.status_code for a in answers) == {200: 10, 400: 40}, [a.text for a in answers]
    refusals = {
        (a.json()["error"], a.json()["failed_step"]) for a in answers if a.status_code == 400
    }
    assert refusals == {("Insufficient balance", "payment")}
    assert sagakit.balance("spender") == 0
    assert sagakit.stock("cheap") == 1000 - 10
    # Refusals may or may not leave a 'rejected' row; only charges move money.
    charged = sagakit.rows("SELECT count(*), sum(amount) FROM payments WHERE status = 'charged'")
    assert charged == [(10, 100)]
    assert sagakit.integer("SELECT count(*) FROM payments WHERE status <> 'charged'") in (0, 40)
