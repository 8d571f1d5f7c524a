"""The checkout's contract in each mode: in-process, HTTP participants, AMQP participants.

Each test runs once per mode against that mode's running processes (started once for the
module), and checks the effects in the database of the service that owns them: the
balance and the payment at the payment service, the stock and the reservation at the
inventory service, the shipment at the shipping service. The demo orders (``shop/demo.py``)
are each checked out by one test only; the other tests create users, items and orders of
their own, so that the tests of a mode do not depend on each other's order.
"""

from __future__ import annotations

import asyncio
from typing import Final

import pytest

from tests.modes.conftest import Deployment
from tests.processes import ADMIN_HEADERS, eventually
from tests.recovery.conftest import wait_saga_finished

pytestmark = pytest.mark.asyncio(loop_scope="module")

COMPLETED_BODY: Final = {"status": "completed", "message": "Order Completed"}


def steps_of(saga: dict[str, object]) -> dict[str, object]:
    """``{step name: step status}`` of a ``GET /sagas/{id}`` body."""
    steps = saga["steps"]
    assert isinstance(steps, list)
    return {str(s["name"]): s["status"] for s in steps}


def compensated_steps(saga: dict[str, object]) -> list[object]:
    """The steps whose compensation succeeded, in the order the events record it."""
    events = saga["events"]
    assert isinstance(events, list)
    return [e["step"] for e in events if e["type"] == "compensation_succeeded"]


async def test_demo_order1_completes_with_each_effect_in_its_services_database(
    deployment: Deployment,
) -> None:
    """order1: 200 completed; user1 debited 20, item1 down 2, a shipment to Some Street."""
    balance, stock = deployment.balance("user1"), deployment.stock("item1")
    async with deployment.client() as client:
        answer = await client.post("/checkout/order1")
        body = answer.json()
        saga = (await client.get(f"/sagas/{body['saga_id']}")).json()
        order = (await client.get("/orders/order1")).json()

    assert answer.status_code == 200, answer.text
    assert body == {"order_id": "order1", "saga_id": body["saga_id"], **COMPLETED_BODY}
    assert saga["status"] == "completed"
    assert steps_of(saga) == {
        "payment": "succeeded",
        "inventory": "succeeded",
        "shipping": "succeeded",
    }
    assert order["status"] == "completed"
    saga_id = body["saga_id"]
    assert deployment.payment(saga_id) == ("user1", 20, "charged")
    assert deployment.reservation(saga_id) == ({"item1": 2}, "reserved")
    assert deployment.shipment(saga_id) == ("order1", "Some Street", "shipped")
    assert deployment.balance("user1") == balance - 20
    assert deployment.stock("item1") == stock - 2


async def test_demo_order2_refused_for_money_changes_nothing(deployment: Deployment) -> None:
    """order2: 400 Insufficient balance at payment; user2 and item2 as they were."""
    balance, stock = deployment.balance("user2"), deployment.stock("item2")
    async with deployment.client() as client:
        answer = await client.post("/checkout/order2")
        body = answer.json()
        saga = (await client.get(f"/sagas/{body['saga_id']}")).json()
        order = (await client.get("/orders/order2")).json()

    assert answer.status_code == 400, answer.text
    assert body == {
        "order_id": "order2",
        "saga_id": body["saga_id"],
        "status": "compensated",
        "error": "Insufficient balance",
        "failed_step": "payment",
    }
    assert saga["status"] == "compensated"
    assert steps_of(saga) == {"payment": "failed", "inventory": "pending", "shipping": "pending"}
    assert compensated_steps(saga) == []
    assert order["status"] == "failed"
    saga_id = body["saga_id"]
    assert deployment.payment(saga_id) == ("user2", 10, "rejected")
    assert deployment.reservation(saga_id) is None
    assert deployment.shipment(saga_id) is None
    assert (deployment.balance("user2"), deployment.stock("item2")) == (balance, stock) == (5, 3)


async def test_demo_order3_refused_by_shipping_refunds_the_payment_and_releases_the_stock(
    deployment: Deployment,
) -> None:
    """order3: 400 Invalid shipping address; inventory then payment compensated, once each."""
    balance, stock = deployment.balance("user1"), deployment.stock("item2")
    async with deployment.client() as client:
        answer = await client.post("/checkout/order3")
        body = answer.json()
        saga = (await client.get(f"/sagas/{body['saga_id']}")).json()
        order = (await client.get("/orders/order3")).json()

    assert answer.status_code == 400, answer.text
    assert (body["status"], body["error"], body["failed_step"]) == (
        "compensated",
        "Invalid shipping address",
        "shipping",
    )
    assert saga["status"] == "compensated"
    assert steps_of(saga) == {
        "payment": "compensated",
        "inventory": "compensated",
        "shipping": "failed",
    }
    assert compensated_steps(saga) == ["inventory", "payment"]
    assert order["status"] == "failed"
    saga_id = body["saga_id"]
    assert deployment.payment(saga_id) == ("user1", 10, "refunded")
    assert deployment.reservation(saga_id) == ({"item2": 1}, "released")
    assert deployment.shipment(saga_id) == ("order3", "", "rejected")
    assert (deployment.balance("user1"), deployment.stock("item2")) == (balance, stock)


async def test_checkout_without_enough_stock_refunds_the_payment(deployment: Deployment) -> None:
    """Two of an item with one in stock: 400 Not enough stock, the charge refunded."""
    async with deployment.client() as client:
        await deployment.add_user(client, "scarce-buyer", 100)
        await deployment.add_item(client, "scarce", 1)
        await deployment.add_order(client, "scarce-order", "scarce-buyer", {"scarce": 2})
        answer = await client.post("/checkout/scarce-order")
        body = answer.json()
        saga = (await client.get(f"/sagas/{body['saga_id']}")).json()

    assert answer.status_code == 400, answer.text
    assert (body["status"], body["error"], body["failed_step"]) == (
        "compensated",
        "Not enough stock",
        "inventory",
    )
    assert steps_of(saga) == {
        "payment": "compensated",
        "inventory": "failed",
        "shipping": "pending",
    }
    assert compensated_steps(saga) == ["payment"]
    saga_id = body["saga_id"]
    assert deployment.payment(saga_id) == ("scarce-buyer", 20, "refunded")
    assert deployment.reservation(saga_id) == ({"scarce": 2}, "rejected")
    assert deployment.shipment(saga_id) is None
    assert (deployment.balance("scarce-buyer"), deployment.stock("scarce")) == (100, 1)


async def test_repeated_and_concurrent_checkouts_answer_one_saga_and_charge_once(
    deployment: Deployment,
) -> None:
    """Three checkouts in a row and three at once: one saga, one charge, one shipment."""
    async with deployment.client() as client:
        await deployment.add_user(client, "repeat-buyer", 100)
        await deployment.add_item(client, "repeat-item", 10)
        await deployment.add_order(client, "repeat-order", "repeat-buyer", {"repeat-item": 3})
        at_once = await asyncio.gather(*(client.post("/checkout/repeat-order") for _ in range(3)))
        in_a_row = [await client.post("/checkout/repeat-order") for _ in range(3)]

    answers = [*at_once, *in_a_row]
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
    [saga_id] = {a.json()["saga_id"] for a in answers}
    assert deployment.sagas_of("repeat-order") == [(saga_id, "completed")]
    assert deployment.rows_of(
        "payment", "SELECT amount, status FROM payments WHERE user_id = 'repeat-buyer'"
    ) == [(30, "charged")]
    assert deployment.reservation(saga_id) == ({"repeat-item": 3}, "reserved")
    assert deployment.rows_of(
        "shipping", "SELECT status FROM shipments WHERE order_id = 'repeat-order'"
    ) == [("shipped",)]
    assert (deployment.balance("repeat-buyer"), deployment.stock("repeat-item")) == (70, 7)


async def test_compensated_order_checked_out_again_starts_a_new_saga_compensated_again(
    deployment: Deployment,
) -> None:
    """A blank-address order twice: two sagas, two refunds, balance and stock as before."""
    async with deployment.client() as client:
        await deployment.add_user(client, "again-buyer", 50)
        await deployment.add_item(client, "again-item", 4)
        await deployment.add_order(client, "again-order", "again-buyer", {"again-item": 2}, "  ")
        first = await client.post("/checkout/again-order")
        second = await client.post("/checkout/again-order")

    assert (first.status_code, second.status_code) == (400, 400), (first.text, second.text)
    sagas = [first.json()["saga_id"], second.json()["saga_id"]]
    assert sagas[0] != sagas[1]
    assert deployment.sagas_of("again-order") == [(s, "compensated") for s in sagas]
    for saga_id in sagas:
        assert deployment.payment(saga_id) == ("again-buyer", 20, "refunded")
        assert deployment.reservation(saga_id) == ({"again-item": 2}, "released")
        assert deployment.shipment(saga_id) == ("again-order", "  ", "rejected")
    assert (deployment.balance("again-buyer"), deployment.stock("again-item")) == (50, 4)


async def test_balances_and_stock_read_through_the_api_are_the_services_own(
    deployment: Deployment,
) -> None:
    """``GET /users`` and ``GET /items`` answer the balance and stock after a checkout."""
    async with deployment.client() as client:
        await deployment.add_user(client, "reader", 100)
        await deployment.add_item(client, "read-item", 5, price=7)
        await deployment.add_order(client, "read-order", "reader", {"read-item": 2})
        assert (await client.post("/checkout/read-order")).status_code == 200
        user = (await client.get("/users/reader")).json()
        item = (await client.get("/items/read-item")).json()

    assert user == {"user_id": "reader", "balance": 86}
    assert item == {"item_id": "read-item", "stock": 3, "price": 7}
    assert (deployment.balance("reader"), deployment.stock("read-item")) == (86, 3)


async def test_invalid_checkouts_and_orders_answer_4xx_and_change_nothing(
    deployment: Deployment,
) -> None:
    """Unknown or malformed orders, bad flags and bodies, taken ids: 4xx, no saga, no effect."""
    payments = deployment.rows_of("payment", "SELECT count(*) FROM payments")
    async with deployment.client() as client:
        await deployment.add_user(client, "strict-buyer", 100)
        await deployment.add_item(client, "strict-item", 5)
        await deployment.add_order(client, "strict-order", "strict-buyer", {"strict-item": 1})
        checkouts = {
            "/checkout/no-such-order": 404,
            "/checkout/bad$id": 422,
            "/checkout/strict-order?wait=maybe": 422,
        }
        answers = {path: await client.post(path) for path in checkouts}
        base = {"user_id": "strict-buyer", "items": {"strict-item": 1}, "address": "x"}
        orders = [
            ({**base, "order_id": "strict-order"}, 409),
            ({**base, "user_id": "ghost"}, 422),
            ({**base, "items": {"ghost-item": 1}}, 422),
            ({**base, "items": {"strict-item": 0}}, 422),
            ({**base, "items": {}}, 422),
            ({**base, "order_id": "bad id"}, 422),
        ]
        created = [await client.post("/orders", json=body) for body, _ in orders]
        taken = [
            await client.post(
                "/users", json={"user_id": "strict-buyer", "balance": 1}, headers=ADMIN_HEADERS
            ),
            await client.post(
                "/items",
                json={"item_id": "strict-item", "stock": 1, "price": 1},
                headers=ADMIN_HEADERS,
            ),
        ]
        order = (await client.get("/orders/strict-order")).json()

    assert {p: a.status_code for p, a in answers.items()} == checkouts
    assert [c.status_code for c in created] == [status for _, status in orders]
    assert [t.status_code for t in taken] == [409, 409]
    for answer in [*answers.values(), *created, *taken]:
        assert isinstance(answer.json()["error"], str), answer.text
    assert order["status"] == "new"
    assert deployment.sagas_of("strict-order") == []
    assert deployment.rows_of("payment", "SELECT count(*) FROM payments") == payments
    assert (deployment.balance("strict-buyer"), deployment.stock("strict-item")) == (100, 5)


async def test_many_concurrent_checkouts_each_apply_their_effects_once(
    deployment: Deployment,
) -> None:
    """Twenty checkouts at once (every fourth address blank): money and stock conserved."""
    balance, stock = 10_000, 1_000
    async with deployment.client() as client:
        await deployment.add_user(client, "crowd", balance)
        await deployment.add_item(client, "crowd-item", stock)
        orders = [f"crowd-{n}" for n in range(20)]
        for n, order in enumerate(orders):
            address = "" if n % 4 == 3 else f"{n} Crowd Street"
            await deployment.add_order(client, order, "crowd", {"crowd-item": 1 + n % 3}, address)
        started = await asyncio.gather(*(client.post(f"/checkout/{o}?wait=false") for o in orders))
        sagas = [await wait_saga_finished(client, a.json()["saga_id"], 60.0) for a in started]

    # 202 while the saga runs on; in-process, each ran whole as one unit before the answer,
    # which then is its outcome (200 completed, 400 compensated).
    answered = {202} if deployment.mode != "inprocess" else {200, 400}
    assert {a.status_code for a in started} == answered
    completed = {str(s["saga_id"]) for s in sagas if s["status"] == "completed"}
    compensated = {str(s["saga_id"]) for s in sagas if s["status"] == "compensated"}
    assert (len(completed), len(compensated)) == (15, 5)
    for saga_id in completed:
        assert deployment.effects(saga_id) == ("charged", "reserved", "shipped")
    for saga_id in compensated:
        assert deployment.effects(saga_id) == ("refunded", "released", "rejected")
    charged = deployment.charged_to("crowd")
    assert charged == 10 * sum(1 + n % 3 for n in range(20) if n % 4 != 3)
    assert deployment.balance("crowd") + charged == balance
    assert deployment.stock("crowd-item") + deployment.reserved_of("crowd-item") == stock
    if deployment.mode == "amqp":
        # Every command the checkout wrote was published and confirmed.
        unsent = "SELECT count(*) FROM saga_outbox WHERE sent_at IS NULL"

        async def all_sent() -> bool | None:
            return True if deployment.launcher.rows(unsent) == [(0,)] else None

        await eventually(all_sent, timeout=5.0, what="the outbox is sent")
