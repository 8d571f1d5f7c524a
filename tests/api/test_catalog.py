"""Users, items and orders: reads, the admin routes that create them, and ``POST /orders``."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from tests.api.conftest import Serve, client_of
from tests.api.support import ADMIN, json_of


async def test_get_user_answers_the_demo_balance(client: httpx.AsyncClient) -> None:
    """``GET /users/user1`` answers the demo user and balance, and nothing more."""
    response = await client.get("/users/user1")

    assert response.status_code == 200
    assert json_of(response) == {"user_id": "user1", "balance": 100}


async def test_get_item_answers_the_demo_stock_and_price(client: httpx.AsyncClient) -> None:
    """``GET /items/item2`` answers the demo item's stock and price, and nothing more."""
    response = await client.get("/items/item2")

    assert response.status_code == 200
    assert json_of(response) == {"item_id": "item2", "stock": 3, "price": 10}


async def test_get_order_answers_lines_total_and_status_new(client: httpx.AsyncClient) -> None:
    """``GET /orders/order1`` answers the demo order priced at 20 and never checked out."""
    response = await client.get("/orders/order1")

    assert response.status_code == 200
    assert json_of(response) == {
        "order_id": "order1",
        "user_id": "user1",
        "items": {"item1": 2},
        "address": "Some Street",
        "total": 20,
        "status": "new",
    }


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/users/nobody", "user 'nobody' not found"),
        ("/items/nothing", "item 'nothing' not found"),
        ("/orders/no-order", "order 'no-order' not found"),
        ("/sagas/no_saga", "saga 'no_saga' not found"),
    ],
)
async def test_get_of_an_unknown_id_answers_404(
    client: httpx.AsyncClient, path: str, error: str
) -> None:
    """A well-formed id that names nothing answers 404 with an error message."""
    response = await client.get(path)

    assert response.status_code == 404
    assert json_of(response) == {"error": error}


async def test_create_user_with_the_token_answers_201_and_persists(
    client: httpx.AsyncClient,
) -> None:
    """An admin creates a user: 201 with the user, and ``GET`` then finds it."""
    response = await client.post("/users", json={"user_id": "ann", "balance": 250}, headers=ADMIN)

    assert response.status_code == 201
    assert json_of(response) == {"user_id": "ann", "balance": 250}
    assert json_of(await client.get("/users/ann")) == {"user_id": "ann", "balance": 250}


async def test_create_item_with_the_token_answers_201_and_persists(
    client: httpx.AsyncClient,
) -> None:
    """An admin creates an item: 201 with the item, and ``GET`` then finds it."""
    body = {"item_id": "lamp", "stock": 7, "price": 1999}
    response = await client.post("/items", json=body, headers=ADMIN)

    assert response.status_code == 201
    assert json_of(response) == body
    assert json_of(await client.get("/items/lamp")) == body


ADMIN_CREATES = [
    ("/users", {"user_id": "ann", "balance": 1}, "/users/ann"),
    ("/items", {"item_id": "lamp", "stock": 1, "price": 1}, "/items/lamp"),
]


NOT_ADMIN = {
    "none": {},
    "wrong": {"Authorization": "Bearer wrong-token"},
    "basic": {"Authorization": "Basic test-token"},
    "no-scheme": {"Authorization": "test-token"},
    "empty": {"Authorization": "Bearer "},
    "prefix": {"Authorization": "Bearer test-toke"},
}


@pytest.mark.parametrize(("path", "body", "created"), ADMIN_CREATES, ids=["user", "item"])
async def test_create_without_the_admin_token_answers_401_and_creates_nothing(
    client: httpx.AsyncClient,
    stranger: httpx.AsyncClient,
    path: str,
    body: dict[str, object],
    created: str,
) -> None:
    """Admin routes refuse a missing or wrong token with 401 and create nothing."""
    responses = {
        name: await stranger.post(path, json=body, headers=headers)
        for name, headers in NOT_ADMIN.items()
    }

    assert {n: r.status_code for n, r in responses.items()} == dict.fromkeys(NOT_ADMIN, 401)
    for response in responses.values():
        assert response.headers["www-authenticate"] == "Bearer"
        assert "error" in json_of(response)
    assert (await client.get(created)).status_code == 404


@pytest.mark.parametrize(("path", "body", "created"), ADMIN_CREATES, ids=["user", "item"])
async def test_create_without_a_configured_token_answers_401(
    serve: Serve, path: str, body: dict[str, object], created: str
) -> None:
    """With no admin token configured, no bearer token whatever opens the admin routes."""
    async with serve(admin_token=None) as app, client_of(app) as client:
        for headers in ({"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
            response = await client.post(path, json=body, headers=headers)
            assert response.status_code == 401
        assert (await client.get(created)).status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "existing"),
    [
        ("/users", {"user_id": "user1", "balance": 1}, {"user_id": "user1", "balance": 100}),
        (
            "/items",
            {"item_id": "item1", "stock": 1, "price": 1},
            {"item_id": "item1", "stock": 5, "price": 10},
        ),
    ],
    ids=["user", "item"],
)
async def test_create_with_a_taken_id_answers_409_and_keeps_the_original(
    client: httpx.AsyncClient, path: str, body: dict[str, object], existing: dict[str, object]
) -> None:
    """Creating a user or item under a taken id answers 409 and leaves the original as it was."""
    response = await client.post(path, json=body, headers=ADMIN)

    assert response.status_code == 409
    assert "already exists" in str(json_of(response)["error"])
    key = "user_id" if "user_id" in existing else "item_id"
    assert json_of(await client.get(f"{path}/{existing[key]}")) == existing


async def test_create_order_without_an_id_generates_one_and_prices_it(
    client: httpx.AsyncClient,
) -> None:
    """An order posted without an id gets a fresh one, its total priced from the items."""
    body = {"user_id": "user2", "items": {"item1": 3, "item2": 1}, "address": "Elm Road"}
    response = await client.post("/orders", json=body)

    assert response.status_code == 201
    order = json_of(response)
    order_id = str(order.pop("order_id"))
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", order_id)
    assert order == {**body, "total": 40, "status": "new"}
    assert json_of(await client.get(f"/orders/{order_id}")) == {"order_id": order_id, **order}
    other = json_of(await client.post("/orders", json=body))
    assert other["order_id"] != order_id


async def test_create_order_with_an_id_keeps_it_and_defaults_the_address(
    client: httpx.AsyncClient,
) -> None:
    """An order posted with an id and no address is stored under that id with an empty one."""
    body = {"order_id": "o-7", "user_id": "user1", "items": {"item2": 2}}
    response = await client.post("/orders", json=body)

    assert response.status_code == 201
    expected = {**body, "address": "", "total": 20, "status": "new"}
    assert json_of(response) == expected
    assert json_of(await client.get("/orders/o-7")) == expected


async def test_create_order_with_a_taken_id_answers_409_and_keeps_the_original(
    client: httpx.AsyncClient,
) -> None:
    """Posting an order under a taken id answers 409; the original order is unchanged."""
    before = json_of(await client.get("/orders/order1"))
    body = {"order_id": "order1", "user_id": "user2", "items": {"item2": 1}, "address": "X"}

    response = await client.post("/orders", json=body)

    assert response.status_code == 409
    assert json_of(response) == {"error": "order 'order1' already exists"}
    assert json_of(await client.get("/orders/order1")) == before


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"user_id": "ghost", "items": {"item1": 1}}, "unknown user 'ghost'"),
        ({"user_id": "user1", "items": {"item1": 1, "gizmo": 1}}, "unknown item 'gizmo'"),
    ],
    ids=["unknown-user", "unknown-item"],
)
async def test_create_order_naming_unknown_records_answers_422_and_stores_nothing(
    client: httpx.AsyncClient, body: dict[str, object], error: str
) -> None:
    """An order naming an unknown user or item answers 422 and no order is stored."""
    response = await client.post("/orders", json={"order_id": "bad-order", **body})

    assert response.status_code == 422
    assert json_of(response)["error"] == error
    assert (await client.get("/orders/bad-order")).status_code == 404


@pytest.mark.parametrize(
    "items", [{}, None, [], {"item1": 0}], ids=["empty", "null", "list", "qty-0"]
)
async def test_create_order_without_items_answers_422(
    client: httpx.AsyncClient, items: object
) -> None:
    """An order with no items (or a line of quantity 0) answers 422 and stores nothing."""
    body = {"order_id": "bad-order", "user_id": "user1", "items": items}
    response = await client.post("/orders", json=body)

    assert response.status_code == 422
    assert "error" in json_of(response)
    assert (await client.get("/orders/bad-order")).status_code == 404


async def test_create_order_whose_total_passes_2_53_answers_422(
    client: httpx.AsyncClient,
) -> None:
    """An order whose total would pass 2**53-1 answers 422 instead of storing an inexact sum."""
    big = {"item_id": "gold", "stock": 10, "price": 2**53 - 1}
    assert (await client.post("/items", json=big, headers=ADMIN)).status_code == 201
    body = {"order_id": "too-much", "user_id": "user1", "items": {"gold": 2}, "address": "X"}

    response = await client.post("/orders", json=body)

    assert response.status_code == 422
    assert "exceeds" in str(json_of(response)["error"])
    assert (await client.get("/orders/too-much")).status_code == 404


async def test_concurrent_creates_of_one_order_id_store_exactly_one(
    client: httpx.AsyncClient,
) -> None:
    """Eight concurrent posts of one order id: one 201, seven 409, and the first one stored."""
    bodies = [
        {"order_id": "race", "user_id": "user1", "items": {"item1": n}, "address": "A"}
        for n in range(1, 9)
    ]

    responses = await asyncio.gather(*(client.post("/orders", json=b) for b in bodies))

    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * 7
    winner = next(json_of(r) for r in responses if r.status_code == 201)
    assert json_of(await client.get("/orders/race")) == winner


async def test_concurrent_creates_of_one_user_id_store_exactly_one(
    client: httpx.AsyncClient,
) -> None:
    """Eight concurrent admin posts of one user id: one 201 and seven 409."""
    responses = await asyncio.gather(
        *(
            client.post("/users", json={"user_id": "dup", "balance": n}, headers=ADMIN)
            for n in range(8)
        )
    )

    assert sorted(r.status_code for r in responses) == [201] + [409] * 7
    winner = next(json_of(r) for r in responses if r.status_code == 201)
    assert json_of(await client.get("/users/dup")) == winner


@pytest.mark.parametrize(
    ("field", "value"),
    [("address", "a" * 1001), ("items", {f"i{n}": 1 for n in range(1001)})],
    ids=["address-1001-chars", "1001-lines"],
)
async def test_create_order_over_the_size_limits_answers_422(
    client: httpx.AsyncClient, field: str, value: object
) -> None:
    """An address over 1000 characters or more than 1000 lines answers 422."""
    body = {"order_id": "huge", "user_id": "user1", "items": {"item1": 1}, field: value}

    response = await client.post("/orders", json=body)

    assert response.status_code == 422
    assert str(json_of(response)["error"]).startswith(f"invalid request: body.{field}")
    assert (await client.get("/orders/huge")).status_code == 404
