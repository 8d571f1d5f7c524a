"""Saga instances over HTTP: one saga, pages of them, and the operator's retry."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from tests.api.support import (
    ADMIN,
    JsonDict,
    checkout,
    failed_saga,
    json_of,
    page_of,
    settled_saga,
)


async def demo_sagas(client: httpx.AsyncClient) -> dict[str, str]:
    """Check the three demo orders out in order; their saga ids by order id."""
    return {
        order_id: await checkout(client, order_id) for order_id in ("order1", "order2", "order3")
    }


async def test_get_saga_answers_input_steps_and_events(client: httpx.AsyncClient) -> None:
    """A completed checkout's saga shows its input, three succeeded steps and its history."""
    saga_id = await checkout(client, "order1")

    response = await client.get(f"/sagas/{saga_id}")

    assert response.status_code == 200
    saga = json_of(response)
    assert saga["saga_id"] == saga_id
    assert saga["name"] == "checkout"
    assert saga["status"] == "completed"
    assert saga["input"] == {
        "order_id": "order1",
        "user_id": "user1",
        "items": {"item1": 2},
        "address": "Some Street",
        "total": 20,
    }
    steps = saga["steps"]
    assert isinstance(steps, list)
    assert [(s["name"], s["status"], s["attempts"], s["error"]) for s in steps] == [
        ("payment", "succeeded", 1, None),
        ("inventory", "succeeded", 1, None),
        ("shipping", "succeeded", 1, None),
    ]
    events = saga["events"]
    assert isinstance(events, list)
    assert all({"at", "type", "step", "detail"} <= set(e) for e in events)
    assert all(datetime.fromisoformat(e["at"]).utcoffset() == timedelta(0) for e in events)
    assert events[0]["type"] == "saga_started"
    assert events[-1]["type"] == "saga_completed"
    assert [e["step"] for e in events if e["type"] == "step_succeeded"] == [
        "payment",
        "inventory",
        "shipping",
    ]


async def test_get_saga_of_a_refused_checkout_shows_the_failed_and_compensated_steps(
    client: httpx.AsyncClient,
) -> None:
    """order3's saga shows shipping failed with its message and the steps before compensated."""
    saga = json_of(await client.get(f"/sagas/{await checkout(client, 'order3')}"))

    assert saga["status"] == "compensated"
    assert saga["failed_step"] == "shipping"
    assert saga["error"] == "Invalid shipping address"
    steps = saga["steps"]
    assert isinstance(steps, list)
    assert [(s["name"], s["status"], s["error"]) for s in steps] == [
        ("payment", "compensated", None),
        ("inventory", "compensated", None),
        ("shipping", "failed", "Invalid shipping address"),
    ]


@pytest.mark.parametrize("saga_id", ["a.b", "x" * 65, "has space"])
async def test_get_saga_with_an_invalid_id_answers_422(
    client: httpx.AsyncClient, saga_id: str
) -> None:
    """A saga id outside ``^[A-Za-z0-9_-]{1,64}$`` answers 422."""
    response = await client.get(f"/sagas/{saga_id}")

    assert response.status_code == 422
    assert "error" in json_of(response)


async def test_list_sagas_answers_newest_first(client: httpx.AsyncClient) -> None:
    """``GET /sagas`` lists every saga newest first, in one page with no next cursor."""
    ids = await demo_sagas(client)

    sagas, cursor = await page_of(client)

    assert cursor is None
    assert [s["saga_id"] for s in sagas] == [ids["order3"], ids["order2"], ids["order1"]]
    assert [(s["business_key"], s["status"], s["failed_step"]) for s in sagas] == [
        ("order3", "compensated", "shipping"),
        ("order2", "compensated", "payment"),
        ("order1", "completed", None),
    ]


async def test_list_sagas_of_an_empty_store_answers_an_empty_page(
    client: httpx.AsyncClient,
) -> None:
    """Before any checkout the listing is empty and has no next cursor."""
    assert await page_of(client) == ([], None)


@pytest.mark.parametrize(
    ("status", "orders"),
    [
        ("completed", ["order1"]),
        ("compensated", ["order3", "order2"]),
        ("failed", []),
        ("running", []),
    ],
)
async def test_list_sagas_filtered_by_status_answers_only_that_status(
    client: httpx.AsyncClient, status: str, orders: list[str]
) -> None:
    """``?status=`` keeps only the sagas of that status, newest first."""
    ids = await demo_sagas(client)

    sagas, cursor = await page_of(client, status=status)

    assert [s["saga_id"] for s in sagas] == [ids[o] for o in orders]
    assert {s["status"] for s in sagas} <= {status}
    assert cursor is None


async def many_sagas(client: httpx.AsyncClient, count: int) -> list[str]:
    """``count`` compensated checkouts (no address) of a rich user; their ids, newest first."""
    user = {"user_id": "rich", "balance": 10_000}
    assert (await client.post("/users", json=user, headers=ADMIN)).status_code == 201
    ids = []
    for n in range(count):
        order = {"order_id": f"o{n}", "user_id": "rich", "items": {"item1": 1}}
        assert (await client.post("/orders", json=order)).status_code == 201
        ids.append(await checkout(client, f"o{n}"))
    return ids[::-1]


async def walk(client: httpx.AsyncClient, **params: str | int) -> list[list[JsonDict]]:
    """Every page of ``GET /sagas``, following ``next_cursor`` to the end."""
    pages = []
    cursor: str | None = None
    while True:
        sagas, cursor = await page_of(client, **params, **({"cursor": cursor} if cursor else {}))
        pages.append(sagas)
        if cursor is None:
            return pages
        assert len(pages) < 20, "the cursor never ran out"


async def test_list_sagas_limit_answers_that_many_and_a_cursor(
    client: httpx.AsyncClient,
) -> None:
    """``?limit=3`` answers the three newest sagas and a cursor to the rest."""
    ids = await many_sagas(client, 4)

    sagas, cursor = await page_of(client, limit=3)

    assert [s["saga_id"] for s in sagas] == ids[:3]
    assert cursor is not None


async def test_list_sagas_cursor_walks_every_saga_once_in_order(
    client: httpx.AsyncClient,
) -> None:
    """Following ``next_cursor`` with ``limit=3`` visits all 8 sagas once, newest first."""
    ids = await many_sagas(client, 8)

    pages = await walk(client, limit=3)

    assert [len(p) for p in pages] == [3, 3, 2]
    assert [s["saga_id"] for p in pages for s in p] == ids


async def test_list_sagas_cursor_with_an_exact_multiple_ends_without_an_empty_page(
    client: httpx.AsyncClient,
) -> None:
    """With 6 sagas and ``limit=3`` the second page is the last: its cursor is null."""
    ids = await many_sagas(client, 6)

    pages = await walk(client, limit=3)

    assert [[s["saga_id"] for s in p] for p in pages] == [ids[:3], ids[3:]]


async def test_list_sagas_cursor_keeps_the_status_filter(client: httpx.AsyncClient) -> None:
    """Walking the pages of ``?status=completed`` visits only completed sagas, all of them."""
    compensated = await many_sagas(client, 3)
    completed = [await checkout(client, "order1")]
    user = {"user_id": "payer", "balance": 100}
    assert (await client.post("/users", json=user, headers=ADMIN)).status_code == 201
    for n in range(2):
        order = {"order_id": f"p{n}", "user_id": "payer", "items": {"item2": 1}, "address": "Y"}
        assert (await client.post("/orders", json=order)).status_code == 201
        completed.insert(0, await checkout(client, f"p{n}"))

    pages = await walk(client, status="completed", limit=2)

    assert [s["saga_id"] for p in pages for s in p] == completed
    assert not set(compensated) & {s["saga_id"] for p in pages for s in p}


BAD_LIST_PARAMS = [
    {"status": "bogus"},
    {"status": "COMPLETED"},
    {"limit": "0"},
    {"limit": "501"},
    {"limit": "-1"},
    {"limit": "ten"},
    {"limit": "1.5"},
    {"cursor": "abc"},
    {"cursor": "-1"},
    {"cursor": "1" * 19},
    {"cursor": ""},
]


async def test_list_sagas_with_a_bad_parameter_answers_422(client: httpx.AsyncClient) -> None:
    """A bad ``status``, ``limit`` or ``cursor`` answers 422 with an error and the details."""
    await demo_sagas(client)
    responses = {str(p): await client.get("/sagas", params=p) for p in BAD_LIST_PARAMS}

    assert {k: r.status_code for k, r in responses.items()} == dict.fromkeys(responses, 422)
    for response in responses.values():
        body = json_of(response)
        assert str(body["error"]).startswith("invalid request: query.")
        assert isinstance(body["detail"], list)
        assert body["detail"]


async def test_list_sagas_accepts_the_largest_limit(client: httpx.AsyncClient) -> None:
    """``?limit=500`` is within bounds and answers every saga."""
    ids = await demo_sagas(client)

    sagas, cursor = await page_of(client, limit=500)

    assert len(sagas) == len(ids)
    assert cursor is None


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}],
    ids=["no-token", "wrong-token"],
)
async def test_retry_without_the_admin_token_answers_401_and_leaves_the_saga_failed(
    app: FastAPI, client: httpx.AsyncClient, stranger: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """Retry is an admin route: without the right token it answers 401 and changes nothing."""
    saga_id, _ = await failed_saga(app)

    response = await stranger.post(f"/sagas/{saga_id}/retry", headers=headers)

    assert response.status_code == 401
    assert "error" in json_of(response)
    assert json_of(await client.get(f"/sagas/{saga_id}"))["status"] == "failed"


async def test_retry_of_an_unknown_saga_answers_404(client: httpx.AsyncClient) -> None:
    """Retrying a saga id that names nothing answers 404."""
    response = await client.post("/sagas/nosuchsaga/retry", headers=ADMIN)

    assert response.status_code == 404
    assert json_of(response) == {"error": "no saga 'nosuchsaga'"}


@pytest.mark.parametrize("order_id", ["order1", "order3"])
async def test_retry_of_a_saga_that_is_not_failed_answers_409(
    client: httpx.AsyncClient, order_id: str
) -> None:
    """Retrying a completed or compensated saga answers 409 and leaves it as it was."""
    saga_id = await checkout(client, order_id)
    before = json_of(await client.get(f"/sagas/{saga_id}"))

    response = await client.post(f"/sagas/{saga_id}/retry", headers=ADMIN)

    assert response.status_code == 409
    assert "not failed" in str(json_of(response)["error"])
    assert json_of(await client.get(f"/sagas/{saga_id}")) == before


async def test_failed_saga_is_listed_with_its_compensation_error(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A saga whose compensation ran out of attempts is ``failed``, with the undo's error."""
    saga_id, _ = await failed_saga(app)

    saga = json_of(await client.get(f"/sagas/{saga_id}"))

    assert saga["status"] == "failed"
    assert saga["failed_step"] == "refuse"
    assert saga["error"] == "compensation of set_up failed: RuntimeError: undo is <broken>"
    assert [s["saga_id"] for s in (await page_of(client, status="failed"))[0]] == [saga_id]


async def test_retry_of_a_failed_saga_answers_202_and_it_ends_compensated(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Once the undo works, the operator's retry answers 202 and the saga ends compensated."""
    saga_id, set_up = await failed_saga(app)
    set_up.broken = False

    response = await client.post(f"/sagas/{saga_id}/retry", headers=ADMIN)

    assert response.status_code == 202
    assert json_of(response) == {"saga_id": saga_id, "status": "compensating"}
    saga = await settled_saga(client, saga_id)
    assert saga["status"] == "compensated"
    steps = saga["steps"]
    assert isinstance(steps, list)
    assert [(s["name"], s["status"]) for s in steps] == [
        ("set_up", "compensated"),
        ("refuse", "failed"),
    ]
    events = saga["events"]
    assert isinstance(events, list)
    assert "operator_retry" in [e["type"] for e in events]
    assert events[-1]["type"] == "saga_compensated"


async def test_retry_whose_undo_still_fails_ends_failed_again(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A retry while the undo is still broken answers 202 and the saga fails again."""
    saga_id, _ = await failed_saga(app)

    response = await client.post(f"/sagas/{saga_id}/retry", headers=ADMIN)

    assert response.status_code == 202
    assert (await settled_saga(client, saga_id))["status"] == "failed"
    again = await client.post(f"/sagas/{saga_id}/retry", headers=ADMIN)
    assert again.status_code == 202
