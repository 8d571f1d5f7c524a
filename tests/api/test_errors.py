"""Every error is JSON with an ``error`` message; inputs are checked; refusals change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from sagakit.api.errors import status_of
from sagakit.errors import BusinessKeyConflict
from tests.api.support import ADMIN, JsonDict, error_of, json_of

JSON_TYPE = {"content-type": "application/json"}
MIB = 1024 * 1024
MAX_AMOUNT = 2**53 - 1


async def test_unknown_route_answers_404_json(client: httpx.AsyncClient) -> None:
    """A path no route serves answers 404 as JSON."""
    assert error_of(await client.get("/nowhere"), 404) == "Not Found"


async def test_wrong_method_answers_405_json_with_allow(client: httpx.AsyncClient) -> None:
    """A method a route does not serve answers 405 as JSON and names the allowed ones."""
    response = await client.delete("/users/user1")

    assert error_of(response, 405) == "Method Not Allowed"
    assert response.headers["allow"] == "GET"


MALFORMED = {
    "garbage": b"{not json",
    "truncated": b'{"user_id": "user1",',
    "empty": b"",
    "array": b"[]",
    "string": b'"order"',
    "null": b"null",
    "not-utf8": b"\xff\xfe",
}


async def test_malformed_json_answers_422(client: httpx.AsyncClient) -> None:
    """A body that is not a JSON object answers 422 with the details."""
    responses = {
        name: await client.post("/orders", content=content, headers=JSON_TYPE)
        for name, content in MALFORMED.items()
    }

    all_refused(responses)
    for response in responses.values():
        assert str(json_of(response)["error"]).startswith("invalid request:")
        assert isinstance(json_of(response)["detail"], list)


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/orders", b"[" * 100_000 + b"]" * 100_000),
        ("/users", b'{"user_id": "big", "balance": ' + b"9" * 5000 + b"}"),
        ("/orders", b'{"user_id": "user1", "items": {"item1": 1}, "address": "\xff"}'),
    ],
    ids=["nested-100k-deep", "5000-digit-integer", "invalid-utf8-in-string"],
)
async def test_json_the_parser_cannot_read_answers_422(
    client: httpx.AsyncClient, path: str, content: bytes
) -> None:
    """A body under 1 MiB that Python's JSON parser chokes on is a bad body: 422, like the rest."""
    response = await client.post(path, content=content, headers={**JSON_TYPE, **ADMIN})

    error_of(response, 422)
    assert (await client.get("/users/big")).status_code == 404


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/orders", JSON_TYPE), ("/users", {**JSON_TYPE, **ADMIN}), ("/dashboard/login", {})],
)
async def test_body_over_1_mib_with_a_content_length_answers_413(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    """A declared body one byte over 1 MiB answers 413 before the route reads it."""
    response = await client.post(path, content=b" " * (MIB + 1), headers=headers)

    assert error_of(response, 413) == f"request body exceeds {MIB} bytes"


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``total`` bytes of JSON whitespace in chunks, sent without a ``Content-Length``."""
    sent = 0
    while sent < total:
        chunk = b" " * min(size, total - sent)
        sent += len(chunk)
        yield chunk


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/orders", JSON_TYPE), ("/users", {**JSON_TYPE, **ADMIN}), ("/dashboard/login", {})],
)
async def test_chunked_body_over_1_mib_answers_413(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    """A streamed body with no ``Content-Length`` is cut off at 1 MiB with 413."""
    response = await client.post(path, content=chunks(MIB + 1), headers=headers)

    assert "content-length" not in response.request.headers
    assert error_of(response, 413) == f"request body exceeds {MIB} bytes"


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_body_of_exactly_1_mib_is_accepted(client: httpx.AsyncClient, streamed: bool) -> None:
    """A valid body padded to exactly 1 MiB is within the limit and creates the order."""
    order = b'{"order_id": "padded", "user_id": "user1", "items": {"item1": 1}}'
    padding = MIB - len(order)
    content = _then(chunks(padding), order) if streamed else b" " * padding + order

    response = await client.post("/orders", content=content, headers=JSON_TYPE)

    assert response.status_code == 201, response.text
    assert json_of(response)["order_id"] == "padded"


async def _then(head: AsyncIterator[bytes], tail: bytes) -> AsyncIterator[bytes]:
    async for chunk in head:
        yield chunk
    yield tail


@pytest.mark.parametrize(
    ("path", "body", "extra"),
    [
        ("/users", {"user_id": "ann", "balance": 1, "admin": True}, "admin"),
        ("/items", {"item_id": "lamp", "stock": 1, "price": 1, "colour": "red"}, "colour"),
        (
            "/orders",
            {"order_id": "o1", "user_id": "user1", "items": {"item1": 1}, "total": 0},
            "total",
        ),
    ],
)
async def test_unknown_fields_answer_422_naming_the_field(
    client: httpx.AsyncClient, path: str, body: JsonDict, extra: str
) -> None:
    """A body with a field the contract does not name answers 422, pointing at that field."""
    response = await client.post(path, json=body, headers=ADMIN)

    assert (
        error_of(response, 422) == f"invalid request: body.{extra}: Extra inputs are not permitted"
    )
    assert (await client.get(f"{path}/{next(iter(body.values()))}")).status_code == 404


BAD_IDS: dict[str, object] = {
    "empty": "",
    "space": "a b",
    "dot": "a.b",
    "65-chars": "x" * 65,
    "accent": "é",
    "newline": "abc\n",
    "slash": "a/b",
    "html": "<b>",
    "int": 5,
    "null": None,
}


def with_bad_id(field: str, bad: object) -> tuple[str, JsonDict]:
    """A POST path and a body, otherwise valid, whose ``field`` holds ``bad``."""
    order: JsonDict = {"order_id": "o1", "user_id": "user1", "items": {"item1": 1}}
    if field == "user":
        return "/users", {"user_id": bad, "balance": 1}
    if field == "item":
        return "/items", {"item_id": bad, "stock": 1, "price": 1}
    if field == "order.items":
        return "/orders", {**order, "items": {str(bad): 1}}
    return "/orders", {**order, field.removeprefix("order."): bad}


def all_refused(responses: dict[str, httpx.Response], status: int = 422) -> None:
    """Check every named response is a JSON error of ``status`` (the mismatches all shown)."""
    assert {k: r.status_code for k, r in responses.items()} == dict.fromkeys(responses, status)
    for response in responses.values():
        error_of(response, status)


@pytest.mark.parametrize(
    "field", ["user", "item", "order.order_id", "order.user_id", "order.items"]
)
async def test_body_ids_outside_the_pattern_answer_422(
    client: httpx.AsyncClient, field: str
) -> None:
    """An id in a body that does not match ``^[A-Za-z0-9_-]{1,64}$`` answers 422."""
    responses = {}
    for name, bad in BAD_IDS.items():
        # Object keys are always strings, and an absent (null) order id is generated.
        if (field == "order.items" and not isinstance(bad, str)) or (
            field == "order.order_id" and bad is None
        ):
            continue
        path, body = with_bad_id(field, bad)
        responses[name] = await client.post(path, json=body, headers=ADMIN)

    all_refused(responses)
    assert (await client.get("/orders/o1")).status_code == 404


BAD_PATH_IDS = {
    "dot": "a.b",
    "65-chars": "x" * 65,
    "accent": "%C3%A9",
    "newline": "abc%0A",
    "space": "a%20b",
    "html": "%3Cb%3E",
}


@pytest.mark.parametrize("collection", ["users", "items", "orders", "sagas"])
async def test_path_ids_outside_the_pattern_answer_422(
    client: httpx.AsyncClient, collection: str
) -> None:
    """A path id that does not match ``^[A-Za-z0-9_-]{1,64}$`` answers 422."""
    responses = {n: await client.get(f"/{collection}/{bad}") for n, bad in BAD_PATH_IDS.items()}

    all_refused(responses)
    assert all("String should match pattern" in r.text for r in responses.values())


@pytest.mark.parametrize("collection", ["users", "items", "orders", "sagas"])
async def test_path_id_of_64_characters_is_valid_and_answers_404(
    client: httpx.AsyncClient, collection: str
) -> None:
    """A 64-character id is a valid id that names nothing: 404, not 422."""
    error_of(await client.get(f"/{collection}/{'A_b-9' * 12}abcd"), 404)


async def test_quantity_outside_1_to_a_million_answers_422(client: httpx.AsyncClient) -> None:
    """A quantity that is not an integer from 1 to 1,000,000 answers 422 and stores nothing."""
    responses = {}
    for qty in (0, -1, 1_000_001, 1.5, 1.0, "2", True, None):
        body = {"order_id": "o1", "user_id": "user1", "items": {"item1": qty}}
        responses[repr(qty)] = await client.post("/orders", json=body)

    all_refused(responses)
    assert all("body.items.item1" in r.text for r in responses.values())
    assert (await client.get("/orders/o1")).status_code == 404


async def test_quantity_at_the_bounds_is_accepted(client: httpx.AsyncClient) -> None:
    """Quantities 1 and 1,000,000 are valid and priced exactly."""
    for qty in (1, 1_000_000):
        body = {"order_id": f"o{qty}", "user_id": "user1", "items": {"item1": qty}}

        response = await client.post("/orders", json=body)

        assert response.status_code == 201
        assert json_of(response)["total"] == qty * 10


AMOUNT_BODIES = [
    ("/users", {"user_id": "ann", "balance": 1}, "balance"),
    ("/items", {"item_id": "lamp", "stock": 1, "price": 1}, "stock"),
    ("/items", {"item_id": "lamp", "stock": 1, "price": 1}, "price"),
]


@pytest.mark.parametrize(
    ("path", "body", "field"), AMOUNT_BODIES, ids=["balance", "stock", "price"]
)
async def test_amount_outside_0_to_2_53_answers_422(
    client: httpx.AsyncClient, path: str, body: JsonDict, field: str
) -> None:
    """A balance, stock or price not an integer in 0..2**53-1 answers 422 and creates nothing."""
    responses = {}
    for amount in (-1, MAX_AMOUNT + 1, 2**64, 1.5, 1.0, "5", True, None):
        responses[repr(amount)] = await client.post(
            path, json={**body, field: amount}, headers=ADMIN
        )

    all_refused(responses)
    assert all(f"body.{field}" in r.text for r in responses.values())
    assert (await client.get(f"{path}/{next(iter(body.values()))}")).status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "field"), AMOUNT_BODIES, ids=["balance", "stock", "price"]
)
async def test_amount_at_the_bounds_is_accepted_exactly(
    client: httpx.AsyncClient, path: str, body: JsonDict, field: str
) -> None:
    """0 and 2**53-1 are valid amounts, stored and read back exactly."""
    for n, amount in enumerate((0, MAX_AMOUNT)):
        ident = f"{next(iter(body.values()))}{n}"
        key = next(iter(body))

        response = await client.post(path, json={**body, key: ident, field: amount}, headers=ADMIN)

        assert response.status_code == 201
        assert json_of(await client.get(f"{path}/{ident}"))[field] == amount


async def snapshot(client: httpx.AsyncClient) -> list[object]:
    """Everything a client can read about the demo shop and its sagas."""
    paths = [
        "/users/user1",
        "/users/user2",
        "/items/item1",
        "/items/item2",
        "/orders/order1",
        "/orders/order2",
        "/orders/order3",
        "/sagas",
    ]
    metrics = (await client.get("/metrics")).text.splitlines()
    # The requests themselves and the clock move these; the sagas' own metrics must not move.
    moving = ("sagakit_http_", "# HELP sagakit_http_", "# TYPE sagakit_http_", "sagakit_oldest")
    kept = [line for line in metrics if not line.startswith(moving)]
    return [*[json_of(await client.get(path)) for path in paths], kept]


async def test_refused_requests_change_nothing(
    client: httpx.AsyncClient, stranger: httpx.AsyncClient
) -> None:
    """A run of refused requests leaves every user, item, order and saga as it was."""
    assert (await client.post("/checkout/order1")).status_code == 200
    before = await snapshot(client)
    refused = [
        await client.post("/users", json={"user_id": "user1", "balance": 5}, headers=ADMIN),
        await client.post("/users", json={"user_id": "new", "balance": -5}, headers=ADMIN),
        await stranger.post("/users", json={"user_id": "new", "balance": 5}),
        await client.post(
            "/items", json={"item_id": "item1", "stock": 0, "price": 0}, headers=ADMIN
        ),
        await client.post(
            "/items", json={"item_id": "new", "stock": 1, "price": 1.5}, headers=ADMIN
        ),
        await client.post(
            "/orders", json={"order_id": "order2", "user_id": "user1", "items": {"item1": 1}}
        ),
        await client.post(
            "/orders", json={"order_id": "new", "user_id": "user1", "items": {"item1": 0}}
        ),
        await client.post(
            "/orders", json={"order_id": "new", "user_id": "user1", "items": {"nope": 1}}
        ),
        await client.post("/orders", content=b" " * (MIB + 1), headers=JSON_TYPE),
        await client.post("/checkout/no-such-order"),
        await client.post("/checkout/order.1"),
        await client.post("/sagas/nosaga/retry", headers=ADMIN),
        await client.put("/orders/order1"),
    ]

    assert [r.status_code for r in refused] == [
        409,
        422,
        401,
        409,
        422,
        409,
        422,
        422,
        413,
        404,
        422,
        404,
        405,
    ]
    assert await snapshot(client) == before
    for path in ("/users/new", "/items/new", "/orders/new"):
        assert (await client.get(path)).status_code == 404


async def test_chunked_body_over_1_mib_to_checkout_answers_413_and_charges_nothing(
    client: httpx.AsyncClient,
) -> None:
    """A streamed body over 1 MiB to a route that reads no body is refused, like a declared one."""
    declared = await client.post("/checkout/order1", content=b" " * (MIB + 1))
    assert error_of(declared, 413) == f"request body exceeds {MIB} bytes"

    streamed = await client.post("/checkout/order1", content=chunks(MIB + 1))

    error_of(streamed, 413)
    assert json_of(await client.get("/users/user1"))["balance"] == 100
    assert json_of(await client.get("/orders/order1"))["status"] == "new"


def test_business_key_started_with_another_input_maps_to_409() -> None:
    """``BusinessKeyConflict`` (a key reused with a different input) answers 409, not 500."""
    assert status_of(BusinessKeyConflict()) == 409
