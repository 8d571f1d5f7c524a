"""``GET /sagas`` filters, pagination with filters, counts per status, and step durations."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from fastapi import FastAPI

from tests.api.support import ADMIN, FRAGILE, JsonDict, checkout, failed_saga, json_of, page_of

ZERO_COUNTS = {"running": 0, "compensating": 0, "completed": 0, "compensated": 0, "failed": 0}


async def instant() -> datetime:
    """The time now, with a few milliseconds of quiet on each side (so it separates sagas)."""
    await asyncio.sleep(0.005)
    at = datetime.now(UTC)
    await asyncio.sleep(0.005)
    return at


async def ids_of(client: httpx.AsyncClient, **params: str | int) -> list[str]:
    """The saga ids of the first page of ``GET /sagas`` with ``params`` (the last page)."""
    sagas, cursor = await page_of(client, **params)
    assert cursor is None
    return [str(s["saga_id"]) for s in sagas]


async def counts_of(client: httpx.AsyncClient, **params: str | int) -> object:
    """The ``counts`` of ``GET /sagas`` with ``params``."""
    response = await client.get("/sagas", params=params)
    assert response.status_code == 200, response.text
    return json_of(response)["counts"]


async def rich_orders(client: httpx.AsyncClient, count: int) -> list[str]:
    """``count`` orders without an address (so shipping refuses them) of a rich user."""
    user = {"user_id": "rich", "balance": 10_000}
    assert (await client.post("/users", json=user, headers=ADMIN)).status_code == 201
    for n in range(count):
        order = {"order_id": f"o{n}", "user_id": "rich", "items": {"item1": 1}}
        assert (await client.post("/orders", json=order)).status_code == 201
    return [f"o{n}" for n in range(count)]


# -- filters ------------------------------------------------------------------------------------


async def test_list_sagas_by_name_answers_only_sagas_of_that_name(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """``?name=`` keeps the sagas of that definition: checkouts apart from another saga."""
    first = await checkout(client, "order1")
    fragile, _ = await failed_saga(app)
    second = await checkout(client, "order3")

    assert await ids_of(client, name="checkout") == [second, first]
    assert await ids_of(client, name=FRAGILE) == [fragile]
    assert await ids_of(client, name="nothing") == []


async def test_list_sagas_by_business_key_answers_every_saga_of_that_order(
    client: httpx.AsyncClient,
) -> None:
    """``?business_key=`` lists an order's sagas, newest first: a re-checkout makes a second."""
    await checkout(client, "order1")
    first = await checkout(client, "order3")
    second = await checkout(client, "order3")  # compensated, so it may be checked out again

    assert second != first
    assert await ids_of(client, business_key="order3") == [second, first]
    assert await ids_of(client, business_key="order2") == []


async def test_list_sagas_by_creation_time_answers_the_sagas_of_that_range(
    client: httpx.AsyncClient,
) -> None:
    """``created_after`` (inclusive) and ``created_before`` (exclusive) cut the list by time."""
    start = await instant()
    first = await checkout(client, "order1")
    middle = await instant()
    second = await checkout(client, "order2")
    late = await instant()
    third = await checkout(client, "order3")

    assert await ids_of(client, created_after=middle.isoformat()) == [third, second]
    assert await ids_of(client, created_before=middle.isoformat()) == [first]
    between = {"created_after": middle.isoformat(), "created_before": late.isoformat()}
    assert await ids_of(client, **between) == [second]
    assert await ids_of(client, created_before=start.isoformat()) == []


async def test_list_sagas_reads_the_same_instant_in_any_offset(client: httpx.AsyncClient) -> None:
    """The same instant as ``Z``, ``+02:00`` or without an offset (UTC) filters alike."""
    first = await checkout(client, "order1")
    middle = await instant()
    second = await checkout(client, "order3")

    spellings = [
        middle.isoformat().replace("+00:00", "Z"),
        middle.astimezone(timezone(timedelta(hours=2))).isoformat(),
        middle.replace(tzinfo=None).isoformat(),
    ]

    for spelling in spellings:
        assert await ids_of(client, created_after=spelling) == [second], spelling
        assert await ids_of(client, created_before=spelling) == [first], spelling


async def test_list_sagas_combines_filters_with_and(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Several filters keep only the sagas that match every one of them."""
    completed = await checkout(client, "order1")
    middle = await instant()
    refused = await checkout(client, "order3")
    await failed_saga(app)

    assert await ids_of(client, name="checkout", status="compensated") == [refused]
    assert await ids_of(client, name="checkout", created_before=middle.isoformat()) == [completed]
    assert await ids_of(client, business_key="order1", status="compensated") == []
    assert await ids_of(
        client, name="checkout", business_key="order3", created_after=middle.isoformat()
    ) == [refused]


@pytest.mark.parametrize(
    "params",
    [
        {"created_after": "yesterday"},
        {"created_after": "1700000000"},
        {"created_after": "2025-13-01T00:00:00Z"},
        {"created_after": ""},
        {"created_before": "2025-01-01T25:00:00"},
        {"created_before": "2025-01-01 at noon"},
        {"name": ""},
        {"name": "n" * 201},
        {"business_key": ""},
        {"business_key": "k" * 201},
    ],
    ids=lambda p: "-".join(f"{k}={v[:12]}" for k, v in p.items()),
)
async def test_list_sagas_with_a_bad_filter_answers_422(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    """A time that is not ISO 8601, or an empty or overlong name or key, answers 422."""
    response = await client.get("/sagas", params=params)

    assert response.status_code == 422, response.text
    body = json_of(response)
    assert str(body["error"]).startswith(f"invalid request: query.{next(iter(params))}")
    assert isinstance(body["detail"], list)


# -- pagination with filters --------------------------------------------------------------------


async def walk(client: httpx.AsyncClient, **params: str | int) -> list[list[str]]:
    """Every page of ``GET /sagas`` with ``params``, following ``next_cursor`` to the end."""
    pages: list[list[str]] = []
    cursor: str | None = None
    for _ in range(20):  # a bound, so a cursor that never ends fails instead of hanging
        sagas, cursor = await page_of(client, **params, **({"cursor": cursor} if cursor else {}))
        pages.append([str(s["saga_id"]) for s in sagas])
        if cursor is None:
            return pages
    raise AssertionError("the cursor never ran out")


async def test_list_sagas_cursor_with_a_name_filter_walks_every_match_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Pages of ``?name=checkout&limit=2`` visit the five checkouts once, skipping others."""
    checkouts: list[str] = []
    for order_id in await rich_orders(client, 5):
        checkouts.insert(0, await checkout(client, order_id))
        await failed_saga(app)  # another saga between each two checkouts

    pages = await walk(client, name="checkout", limit=2)

    assert pages == [checkouts[:2], checkouts[2:4], checkouts[4:]]


async def test_list_sagas_cursor_with_a_time_range_ends_without_an_empty_page(
    client: httpx.AsyncClient,
) -> None:
    """Four sagas in a range with ``limit=2`` make two pages; the second has no cursor."""
    orders = await rich_orders(client, 6)
    await checkout(client, orders[0])
    start = await instant()
    inside = [await checkout(client, order_id) for order_id in orders[1:5]][::-1]
    end = await instant()
    await checkout(client, orders[5])

    pages = await walk(
        client, created_after=start.isoformat(), created_before=end.isoformat(), limit=2
    )

    assert pages == [inside[:2], inside[2:]]


# -- counts -------------------------------------------------------------------------------------


async def test_list_sagas_of_an_empty_store_counts_zero_in_every_status(
    client: httpx.AsyncClient,
) -> None:
    """Before any saga, every status is counted, at zero."""
    assert await counts_of(client) == ZERO_COUNTS


async def test_list_sagas_counts_follow_every_filter_but_the_status(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """``counts`` follow name, key and time filters; the status filter and the page size not."""
    for order_id in ("order1", "order2", "order3"):
        await checkout(client, order_id)
    await failed_saga(app)
    everything = {**ZERO_COUNTS, "completed": 1, "compensated": 2, "failed": 1}

    assert await counts_of(client) == everything
    assert await counts_of(client, status="failed", limit=1) == everything
    assert await counts_of(client, name="checkout") == {
        **ZERO_COUNTS,
        "completed": 1,
        "compensated": 2,
    }
    assert await counts_of(client, name="checkout", business_key="order3") == {
        **ZERO_COUNTS,
        "compensated": 1,
    }
    assert await counts_of(client, name="nothing") == ZERO_COUNTS
    assert await counts_of(client, created_after="2999-01-01T00:00:00Z") == ZERO_COUNTS
    assert await counts_of(client, created_before="2999-01-01T00:00:00Z") == everything
    assert len(await ids_of(client, status="failed")) == 1


# -- step durations -----------------------------------------------------------------------------


def span_ms(step: JsonDict) -> float:
    """``finished_at - started_at`` of a step, in milliseconds, from its ISO timestamps."""
    started = datetime.fromisoformat(str(step["started_at"]))
    finished = datetime.fromisoformat(str(step["finished_at"]))
    return (finished - started) / timedelta(milliseconds=1)


async def test_get_saga_steps_answer_their_duration_in_milliseconds(
    client: httpx.AsyncClient,
) -> None:
    """Each finished step's ``duration_ms`` is its finish minus its start."""
    saga = json_of(await client.get(f"/sagas/{await checkout(client, 'order1')}"))

    steps = saga["steps"]
    assert isinstance(steps, list)
    assert len(steps) == 3
    for step in steps:
        assert isinstance(step["duration_ms"], float)
        assert step["duration_ms"] >= 0
        assert step["duration_ms"] == pytest.approx(span_ms(step), abs=0.002)


async def test_get_saga_steps_that_never_ran_have_no_duration(client: httpx.AsyncClient) -> None:
    """order2's payment is refused: it has a duration; the steps after it, never run, have null."""
    saga = json_of(await client.get(f"/sagas/{await checkout(client, 'order2')}"))

    steps = saga["steps"]
    assert isinstance(steps, list)
    assert [(s["name"], s["status"]) for s in steps] == [
        ("payment", "failed"),
        ("inventory", "pending"),
        ("shipping", "pending"),
    ]
    assert isinstance(steps[0]["duration_ms"], float)
    assert [s["duration_ms"] for s in steps[1:]] == [None, None]
