"""The original demo's README flow, against the demo data, with the answers it promised."""

from __future__ import annotations

import sqlite3

import httpx
from fastapi import FastAPI

from sagakit.shop.sqlite import SqliteShop
from tests.api.support import ADMIN, JsonDict, json_of, page_of


async def read(client: httpx.AsyncClient, path: str) -> JsonDict:
    """``GET path``, which must answer 200."""
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return json_of(response)


async def balance(client: httpx.AsyncClient, user_id: str) -> object:
    """The user's balance."""
    return (await read(client, f"/users/{user_id}"))["balance"]


async def stock(client: httpx.AsyncClient, item_id: str) -> object:
    """The item's stock."""
    return (await read(client, f"/items/{item_id}"))["stock"]


async def status(client: httpx.AsyncClient, order_id: str) -> object:
    """The order's status."""
    return (await read(client, f"/orders/{order_id}"))["status"]


async def test_demo_orders_are_new_and_priced_at_10_an_item(client: httpx.AsyncClient) -> None:
    """The demo's three orders exist, never checked out, priced at 10 per item."""
    orders = [await read(client, f"/orders/order{n}") for n in (1, 2, 3)]

    assert [(o["user_id"], o["items"], o["address"], o["total"], o["status"]) for o in orders] == [
        ("user1", {"item1": 2}, "Some Street", 20, "new"),
        ("user2", {"item2": 1}, "", 10, "new"),
        ("user1", {"item2": 1}, "", 10, "new"),
    ]


async def test_order1_completes_charging_user1_and_taking_item1(
    client: httpx.AsyncClient,
) -> None:
    """order1 answers 200 "Order Completed", takes 20 from user1 and two item1 from stock."""
    response = await client.post("/checkout/order1")

    assert response.status_code == 200
    body = json_of(response)
    assert body == {
        "order_id": "order1",
        "saga_id": body["saga_id"],
        "status": "completed",
        "message": "Order Completed",
    }
    assert await balance(client, "user1") == 80
    assert await stock(client, "item1") == 3
    assert await status(client, "order1") == "completed"


async def test_order2_fails_at_payment_and_leaves_user2_and_item2_as_they_were(
    client: httpx.AsyncClient,
) -> None:
    """order2 answers 400 "Insufficient balance" at payment; nothing was taken from anyone."""
    response = await client.post("/checkout/order2")

    assert response.status_code == 400
    body = json_of(response)
    assert body == {
        "order_id": "order2",
        "saga_id": body["saga_id"],
        "status": "compensated",
        "error": "Insufficient balance",
        "failed_step": "payment",
    }
    assert await balance(client, "user2") == 5
    assert await stock(client, "item2") == 3
    assert await status(client, "order2") == "failed"


async def test_order3_fails_at_shipping_and_refunds_user1_and_restocks_item2(
    client: httpx.AsyncClient,
) -> None:
    """order3 answers 400 "Invalid shipping address"; its payment and reservation are undone."""
    assert (await client.post("/checkout/order1")).status_code == 200

    response = await client.post("/checkout/order3")

    assert response.status_code == 400
    body = json_of(response)
    assert body == {
        "order_id": "order3",
        "saga_id": body["saga_id"],
        "status": "compensated",
        "error": "Invalid shipping address",
        "failed_step": "shipping",
    }
    assert await balance(client, "user1") == 80
    assert await stock(client, "item2") == 3
    assert await status(client, "order3") == "failed"


async def test_readme_flow_moves_the_orders_from_new_to_completed_and_failed(
    client: httpx.AsyncClient,
) -> None:
    """The README's three curls in order leave the orders completed, failed and failed."""
    assert [await status(client, f"order{n}") for n in (1, 2, 3)] == ["new"] * 3

    codes = [(await client.post(f"/checkout/order{n}")).status_code for n in (1, 2, 3)]

    assert codes == [200, 400, 400]
    assert [await status(client, f"order{n}") for n in (1, 2, 3)] == [
        "completed",
        "failed",
        "failed",
    ]
    assert [await balance(client, u) for u in ("user1", "user2")] == [80, 5]
    assert [await stock(client, i) for i in ("item1", "item2")] == [3, 3]


async def test_repeated_checkout_of_a_completed_order_returns_its_saga_and_charges_nothing(
    client: httpx.AsyncClient,
) -> None:
    """Checking order1 out again answers the same saga's 200 and takes no more money or stock."""
    first = json_of(await client.post("/checkout/order1"))

    again = await client.post("/checkout/order1")

    assert again.status_code == 200
    assert json_of(again) == first
    assert await balance(client, "user1") == 80
    assert await stock(client, "item1") == 3
    assert len((await page_of(client))[0]) == 1


async def test_repeated_checkout_of_a_compensated_order_starts_a_new_saga(
    client: httpx.AsyncClient,
) -> None:
    """Checking order2 out again runs a new saga that refuses the same way and charges nothing."""
    first = json_of(await client.post("/checkout/order2"))

    again = await client.post("/checkout/order2")

    assert again.status_code == 400
    second = json_of(again)
    assert second["saga_id"] != first["saga_id"]
    assert {k: v for k, v in second.items() if k != "saga_id"} == {
        k: v for k, v in first.items() if k != "saga_id"
    }
    assert await balance(client, "user2") == 5


async def top_up(app: FastAPI, user_id: str, amount: int) -> None:
    """Add money to a user's balance (the API has no route for it, so straight in the table)."""
    shop = app.state.service.shop
    assert isinstance(shop, SqliteShop)

    def work(conn: sqlite3.Connection) -> int:
        sql = "UPDATE users SET balance = balance + ? WHERE user_id = ?"
        return conn.execute(sql, (amount, user_id)).rowcount

    assert await shop.db.write(work) == 1


async def test_order_refused_for_money_checks_out_after_a_top_up_with_a_new_saga(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """An order compensated for lack of money completes, under a new saga, once it is paid for."""
    user = {"user_id": "carol", "balance": 15}
    assert (await client.post("/users", json=user, headers=ADMIN)).status_code == 201
    order = {"order_id": "carols", "user_id": "carol", "items": {"item1": 2}, "address": "Lane 4"}
    assert (await client.post("/orders", json=order)).status_code == 201
    refused = await client.post("/checkout/carols")
    assert refused.status_code == 400
    assert json_of(refused)["error"] == "Insufficient balance"
    assert await status(client, "carols") == "failed"
    await top_up(app, "carol", 10)

    response = await client.post("/checkout/carols")

    assert response.status_code == 200
    assert json_of(response)["saga_id"] != json_of(refused)["saga_id"]
    assert await balance(client, "carol") == 5
    assert await stock(client, "item1") == 3
    assert await status(client, "carols") == "completed"
