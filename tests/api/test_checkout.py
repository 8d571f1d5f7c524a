"""``POST /checkout/{order_id}``: each answer (200, 202, 400, 404, 409, 422), waiting, joining."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from sagakit.saga import Saga
from sagakit.shop.local_participants import CHECKOUT
from tests.api.conftest import Serve, client_of
from tests.api.support import ADMIN, Held, Refuse, SetUp, json_of, page_of, settled_saga


async def balance(client: httpx.AsyncClient, user_id: str) -> object:
    """The user's balance as ``GET /users/{user_id}`` reports it."""
    return json_of(await client.get(f"/users/{user_id}"))["balance"]


async def test_checkout_of_a_payable_order_answers_200_completed(
    client: httpx.AsyncClient,
) -> None:
    """A checkout that completes answers 200 with exactly the contract's four fields."""
    response = await client.post("/checkout/order1")

    assert response.status_code == 200
    body = json_of(response)
    assert set(body) == {"order_id", "saga_id", "status", "message"}
    assert body["order_id"] == "order1"
    assert body["status"] == "completed"
    assert body["message"] == "Order Completed"
    saga = json_of(await client.get(f"/sagas/{body['saga_id']}"))
    assert saga["status"] == "completed"
    assert saga["business_key"] == "order1"


async def test_checkout_refused_by_a_step_answers_400_with_the_failed_step(
    client: httpx.AsyncClient,
) -> None:
    """A refused checkout answers 400 with the step's message and name, and nothing else."""
    response = await client.post("/checkout/order2")

    assert response.status_code == 400
    body = json_of(response)
    assert set(body) == {"order_id", "saga_id", "status", "error", "failed_step"}
    assert body["order_id"] == "order2"
    assert body["status"] == "compensated"
    assert body["error"] == "Insufficient balance"
    assert body["failed_step"] == "payment"


async def test_checkout_with_wait_false_answers_at_once_with_the_outcome_of_a_one_unit_saga(
    client: httpx.AsyncClient,
) -> None:
    """In-process, the checkout ran whole as one unit before the answer: that is its outcome."""
    response = await client.post("/checkout/order1", params={"wait": "false"})

    assert response.status_code == 200
    assert json_of(response)["status"] == "completed"
    assert await balance(client, "user1") == 80


async def test_checkout_with_wait_false_answers_202_and_the_saga_then_completes(
    serve: Serve,
) -> None:
    """``?wait=false`` answers 202 with the saga's id at once; the saga finishes anyway."""
    async with serve(local_steps=False) as app, client_of(app) as client:
        response = await client.post("/checkout/order1", params={"wait": "false"})
        saga = await settled_saga(client, str(response.json()["saga_id"]))
        order = json_of(await client.get("/orders/order1"))
        paid = await balance(client, "user1")

    assert response.status_code == 202
    body = json_of(response)
    assert set(body) == {"order_id", "saga_id", "status"}
    assert body["order_id"] == "order1"
    assert body["status"] == "running"
    assert saga["status"] == "completed"
    assert order["status"] == "completed"
    assert paid == 80


async def test_checkout_still_running_after_the_wait_limit_answers_202(serve: Serve) -> None:
    """With a wait limit of zero the checkout answers 202 while its saga runs on."""
    async with serve(checkout_wait_seconds=0, local_steps=False) as app, client_of(app) as client:
        response = await client.post("/checkout/order1")

        assert response.status_code == 202
        body = json_of(response)
        assert body == {"order_id": "order1", "saga_id": body["saga_id"], "status": "running"}
        assert (await settled_saga(client, str(body["saga_id"])))["status"] == "completed"


async def test_checkout_of_an_unknown_order_answers_404(client: httpx.AsyncClient) -> None:
    """An order id that names no order answers 404 with an error message."""
    response = await client.post("/checkout/no-such-order")

    assert response.status_code == 404
    assert json_of(response) == {"error": "order 'no-such-order' not found"}
    assert (await page_of(client))[0] == []


async def test_checkout_with_an_invalid_order_id_answers_422(client: httpx.AsyncClient) -> None:
    """An order id outside ``^[A-Za-z0-9_-]{1,64}$`` answers 422 and starts nothing."""
    response = await client.post("/checkout/order.1")

    assert response.status_code == 422
    assert "error" in json_of(response)
    assert (await page_of(client))[0] == []


async def test_checkout_with_an_invalid_wait_flag_answers_422(client: httpx.AsyncClient) -> None:
    """``?wait=`` must be a boolean; anything else answers 422 and starts nothing."""
    response = await client.post("/checkout/order1", params={"wait": "perhaps"})

    assert response.status_code == 422
    assert "error" in json_of(response)
    assert json_of(await client.get("/orders/order1"))["status"] == "new"


async def test_checkout_joining_a_running_saga_returns_its_outcome(
    client: httpx.AsyncClient,
) -> None:
    """A checkout while the order's saga runs joins that saga instead of starting another."""
    started = json_of(await client.post("/checkout/order1", params={"wait": "false"}))
    joined = await client.post("/checkout/order1")

    assert joined.status_code == 200
    assert json_of(joined)["saga_id"] == started["saga_id"]
    assert await balance(client, "user1") == 80


async def test_concurrent_checkouts_of_one_order_charge_it_once(
    client: httpx.AsyncClient,
) -> None:
    """Ten concurrent checkouts of one order all answer its one saga, charged once."""
    responses = await asyncio.gather(*(client.post("/checkout/order1") for _ in range(10)))

    assert {r.status_code for r in responses} == {200}
    assert len({json_of(r)["saga_id"] for r in responses}) == 1
    assert await balance(client, "user1") == 80
    assert json_of(await client.get("/items/item1"))["stock"] == 3
    assert len((await page_of(client))[0]) == 1


async def block_order1(app: FastAPI, client: httpx.AsyncClient) -> tuple[str, SetUp]:
    """Make order1's checkout end ``failed``: a newer ``checkout`` whose undo always raises."""
    set_up = SetUp()
    app.state.service.orchestrator.register(Saga(CHECKOUT, [set_up, Refuse()], version=2))
    response = await client.post("/checkout/order1")
    assert response.status_code == 409, response.text
    return str(json_of(response)["saga_id"]), set_up


async def test_checkout_of_an_order_whose_saga_failed_answers_409(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Once an order's saga failed to compensate, every checkout answers 409 and starts nothing."""
    saga_id, _ = await block_order1(app, client)

    again = await client.post("/checkout/order1")

    assert again.status_code == 409
    assert json_of(again) == {
        "order_id": "order1",
        "saga_id": saga_id,
        "status": "failed",
        "error": "compensation of set_up failed: RuntimeError: undo is <broken>",
    }
    assert json_of(await client.get("/orders/order1"))["status"] == "failed"
    quick = await client.post("/checkout/order1", params={"wait": "false"})
    assert (quick.status_code, json_of(quick)) == (409, json_of(again))
    assert len((await page_of(client))[0]) == 1


async def test_checkout_after_an_operator_retry_compensates_starts_a_new_saga(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """After the operator's retry compensates the failed saga, a checkout starts a new one."""
    saga_id, set_up = await block_order1(app, client)
    set_up.broken = False
    assert (await client.post(f"/sagas/{saga_id}/retry", headers=ADMIN)).status_code == 202
    assert (await settled_saga(client, saga_id))["status"] == "compensated"

    response = await client.post("/checkout/order1")

    assert response.status_code == 400
    body = json_of(response)
    assert body["saga_id"] != saga_id
    assert body["failed_step"] == "refuse"
    assert body["error"] == "refused on purpose"


async def test_checkout_still_running_at_the_wait_limit_answers_202_checking_out(
    serve: Serve,
) -> None:
    """A saga still running when the wait runs out answers 202; its order is checking_out."""
    held = Held()
    async with serve(checkout_wait_seconds=0.05) as app, client_of(app) as client:
        app.state.service.orchestrator.register(Saga(CHECKOUT, [held], version=2))
        try:
            response = await client.post("/checkout/order1")

            assert response.status_code == 202
            body = json_of(response)
            assert body == {"order_id": "order1", "saga_id": body["saga_id"], "status": "running"}
            assert json_of(await client.get("/orders/order1"))["status"] == "checking_out"
            assert [s["saga_id"] for s in (await page_of(client, status="running"))[0]] == [
                body["saga_id"]
            ]
            assert json_of(await client.post("/checkout/order1"))["saga_id"] == body["saga_id"]
        finally:
            held.gate.set()
        assert (await settled_saga(client, str(body["saga_id"])))["status"] == "completed"
        assert json_of(await client.get("/orders/order1"))["status"] == "completed"


async def test_checkout_still_compensating_at_the_wait_limit_answers_202_compensating(
    serve: Serve,
) -> None:
    """A saga compensating when the wait runs out answers 202 ``compensating``; it ends later."""
    held = Held(hold_undo=True)
    async with serve(checkout_wait_seconds=0.05) as app, client_of(app) as client:
        app.state.service.orchestrator.register(Saga(CHECKOUT, [held, Refuse()], version=2))
        try:
            response = await client.post("/checkout/order1")

            assert response.status_code == 202
            assert json_of(response)["status"] == "compensating"
            assert json_of(await client.get("/orders/order1"))["status"] == "checking_out"
        finally:
            held.gate.set()
        saga = await settled_saga(client, str(json_of(response)["saga_id"]))
        assert (saga["status"], saga["failed_step"]) == ("compensated", "refuse")
        assert json_of(await client.get("/orders/order1"))["status"] == "failed"


async def test_checkout_refused_by_inventory_refunds_the_payment(
    client: httpx.AsyncClient,
) -> None:
    """An order for more than the stock answers 400 at inventory; the payment is refunded."""
    order = {"order_id": "greedy", "user_id": "user1", "items": {"item1": 1, "item2": 4}}
    assert (await client.post("/orders", json={**order, "address": "Here"})).status_code == 201

    response = await client.post("/checkout/greedy")

    assert response.status_code == 400
    body = json_of(response)
    assert (body["error"], body["failed_step"]) == ("Not enough stock", "inventory")
    assert await balance(client, "user1") == 100
    assert json_of(await client.get("/items/item1"))["stock"] == 5
    assert json_of(await client.get("/items/item2"))["stock"] == 3


async def test_concurrent_checkouts_of_a_compensated_order_start_one_new_saga(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Concurrent re-checkouts of a compensated order all join one new saga while it runs."""
    first = json_of(await client.post("/checkout/order3"))
    assert first["status"] == "compensated"
    held = Held()
    app.state.service.orchestrator.register(Saga(CHECKOUT, [held, Refuse()], version=2))
    try:
        responses = await asyncio.gather(
            *(client.post("/checkout/order3", params={"wait": "false"}) for _ in range(8))
        )
    finally:
        held.gate.set()

    assert {r.status_code for r in responses} == {202}
    again = {str(json_of(r)["saga_id"]) for r in responses}
    assert len(again) == 1
    assert first["saga_id"] not in again
    assert (await settled_saga(client, again.pop()))["status"] == "compensated"
    assert len((await page_of(client))[0]) == 2
    assert await balance(client, "user1") == 100


async def test_checkout_with_a_blank_address_is_refused_by_shipping(
    client: httpx.AsyncClient,
) -> None:
    """An address of only whitespace is as invalid as an empty one: 400 at shipping."""
    order = {"order_id": "blank", "user_id": "user1", "items": {"item1": 1}, "address": " \t "}
    assert (await client.post("/orders", json=order)).status_code == 201

    response = await client.post("/checkout/blank")

    assert response.status_code == 400
    body = json_of(response)
    assert (body["error"], body["failed_step"]) == ("Invalid shipping address", "shipping")
    assert await balance(client, "user1") == 100
    assert json_of(await client.get("/items/item1"))["stock"] == 5


async def test_checkout_taking_the_exact_balance_and_stock_completes(
    client: httpx.AsyncClient,
) -> None:
    """A balance that exactly covers the total and stock that exactly covers the lines suffice."""
    user = {"user_id": "exact", "balance": 30}
    assert (await client.post("/users", json=user, headers=ADMIN)).status_code == 201
    order = {"order_id": "all-of-it", "user_id": "exact", "items": {"item2": 3}, "address": "A"}
    assert (await client.post("/orders", json=order)).status_code == 201

    response = await client.post("/checkout/all-of-it")

    assert response.status_code == 200
    assert await balance(client, "exact") == 0
    assert json_of(await client.get("/items/item2"))["stock"] == 0
