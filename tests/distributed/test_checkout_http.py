"""The checkout's contract, with its participants as separate services over HTTP."""

from __future__ import annotations

from tests.distributed.conftest import BALANCE, STOCK, Distributed, create_orders
from tests.processes import ADMIN_HEADERS


async def test_demo_flow_over_http_completes_order1_and_refuses_order2_and_order3(
    distributed: Distributed,
) -> None:
    """order1 answers 200, order2 400 Insufficient balance, order3 400 Invalid address."""
    server = await distributed.start()
    async with server.client() as client:
        first = await client.post("/checkout/order1")
        second = await client.post("/checkout/order2")
        third = await client.post("/checkout/order3")
        user1 = (await client.get("/users/user1")).json()
        item1 = (await client.get("/items/item1")).json()
        item2 = (await client.get("/items/item2")).json()

    assert first.status_code == 200, first.text
    assert first.json()["status"] == "completed"
    assert second.status_code == 400
    assert second.json() | {"saga_id": ""} == {
        "order_id": "order2",
        "saga_id": "",
        "status": "compensated",
        "error": "Insufficient balance",
        "failed_step": "payment",
    }
    assert third.status_code == 400
    assert (third.json()["error"], third.json()["failed_step"]) == (
        "Invalid shipping address",
        "shipping",
    )
    # Balances and stock are the participants' own, read through the checkout service.
    assert user1 == {"user_id": "user1", "balance": 80}
    assert (item1["stock"], item2["stock"]) == (3, 3)
    distributed.assert_exactly_once(balance=105, stock=8)


async def test_order3_over_http_refunds_its_payment_and_releases_its_stock(
    distributed: Distributed,
) -> None:
    """A shipping refusal leaves order3's payment refunded and its reservation released."""
    server = await distributed.start()
    async with server.client() as client:
        answer = await client.post("/checkout/order3")
    saga_id = answer.json()["saga_id"]

    assert answer.status_code == 400
    assert distributed.rows_of("payment", "SELECT idempotency_key, status FROM payments") == [
        (f"{saga_id}:payment", "refunded")
    ]
    assert distributed.rows_of("inventory", "SELECT status FROM reservations") == [("released",)]
    assert distributed.rows_of("shipping", "SELECT status FROM shipments") == [("rejected",)]
    balance = "SELECT balance FROM users WHERE user_id = 'user1'"
    assert distributed.integer_of("payment", balance) == 100
    stock = "SELECT stock FROM items WHERE item_id = 'item2'"
    assert distributed.integer_of("inventory", stock) == 3


async def test_checkout_over_http_without_enough_stock_refunds_the_payment(
    distributed: Distributed,
) -> None:
    """An order for more than the stock answers 400 Not enough stock and refunds its charge."""
    server = await distributed.start()
    async with server.client() as client:
        order = {"order_id": "big", "user_id": "user1", "items": {"item2": 4}, "address": "Here"}
        assert (await client.post("/orders", json=order)).status_code == 201
        answer = await client.post("/checkout/big")
        user1 = (await client.get("/users/user1")).json()

    assert answer.status_code == 400
    assert (answer.json()["error"], answer.json()["failed_step"]) == (
        "Not enough stock",
        "inventory",
    )
    assert user1["balance"] == 100
    assert distributed.rows_of("payment", "SELECT status FROM payments") == [("refunded",)]
    distributed.assert_exactly_once(balance=105, stock=8)


async def test_repeated_checkout_over_http_answers_the_same_saga_and_charges_once(
    distributed: Distributed,
) -> None:
    """Checking order1 out three times answers one saga and debits user1 once."""
    server = await distributed.start()
    async with server.client() as client:
        answers = [await client.post("/checkout/order1") for _ in range(3)]

    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["saga_id"] for a in answers}) == 1
    assert distributed.integer_of("payment", "SELECT count(*) FROM payments") == 1
    distributed.assert_exactly_once(balance=105, stock=8)


async def test_admin_created_user_and_item_exist_at_the_participants(
    distributed: Distributed,
) -> None:
    """POST /users and /items create the records at payment and inventory, readable back."""
    server = await distributed.start()
    async with server.client() as client:
        await create_orders(client, 1)
        user = (await client.get("/users/buyer")).json()
        item = (await client.get("/items/widget")).json()
        again = await client.post(
            "/users", json={"user_id": "buyer", "balance": 1}, headers=ADMIN_HEADERS
        )

    assert user == {"user_id": "buyer", "balance": 1_000_000}
    assert item == {"item_id": "widget", "stock": 10_000, "price": 10}
    assert again.status_code == 409
    distributed.assert_exactly_once(balance=BALANCE, stock=STOCK)


async def test_many_checkouts_over_http_each_apply_their_effects_once(
    distributed: Distributed,
) -> None:
    """Forty concurrent checkouts end completed or compensated with every effect once."""
    server = await distributed.start()
    async with server.client() as client:
        orders = await create_orders(client, 40)
        answers = [await client.post(f"/checkout/{order}?wait=false") for order in orders]
        await distributed.wait_all_finished()

    assert {a.status_code for a in answers} == {202}
    assert distributed.statuses() == {"completed": 30, "compensated": 10}
    distributed.assert_exactly_once(balance=BALANCE, stock=STOCK)
