"""Hostile requests: control characters in text, a forged Host, PostgreSQL cut off under load."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Final

import asyncpg
import pytest

from tests.api.conftest import Serve, client_of
from tests.api.support import ADMIN, error_of, failed_saga

BACKENDS: Final = ["sqlite", "postgres"]
ORDER: Final = {"user_id": "user1", "items": {"item1": 1}}


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """The app's database: a fresh SQLite file, then an emptied PostgreSQL database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(request.getfixturevalue("sqlite_url"))


@pytest.mark.parametrize(
    "address", ["Main St\\u0000 1", "bell\\u0007", "esc\\u001b[31m", "del\\u007f", "lone \\ud800"]
)
async def test_a_control_character_in_an_address_is_422_on_every_store(
    serve: Serve, database_url: str, address: str
) -> None:
    """The order is refused as bad input (never 503) and nothing is created."""
    async with serve(database_url=database_url) as app, client_of(app) as http:
        # Sent as JSON escapes: a lone surrogate cannot even be encoded by the client.
        body = '{"order_id": "nul", "user_id": "user1", "items": {"item1": 1}, "address": "%s"}'
        response = await http.post(
            "/orders", content=body % address, headers={"content-type": "application/json"}
        )
        assert "address" in error_of(response, 422)
        assert (await http.get("/orders/nul")).status_code == 404


async def test_tab_and_newline_stay_allowed_in_an_address(serve: Serve, database_url: str) -> None:
    """A two-line address is an address."""
    async with serve(database_url=database_url) as app, client_of(app) as http:
        body = {**ORDER, "order_id": "lines", "address": "Main St 1\nFlat\t2"}
        assert (await http.post("/orders", json=body)).status_code == 201


async def test_control_characters_in_operator_input_are_422_on_every_store(
    serve: Serve, database_url: str
) -> None:
    """A list filter, a resolve reason and a signal payload with NUL are refused, not 503."""
    async with serve(database_url=database_url) as app, client_of(app) as http:
        saga_id, _ = await failed_saga(app)
        answers = [
            await http.get("/sagas", params={"business_key": "a\x00b"}),
            await http.get("/sagas", params={"name": "x\x00"}),
            await http.post(f"/sagas/{saga_id}/resolve", json={"reason": "done\x00"}),
            await http.post(f"/sagas/{saga_id}/signals/go", json={"note": ["x\x00"]}),
            await http.post(f"/sagas/{saga_id}/signals/go", json={"k\x00": 1}),
            await http.get("/dashboard", params={"key": "a\x00"}),
        ]
        assert [a.status_code for a in answers] == [422] * len(answers)
        assert (await http.get(f"/sagas/{saga_id}")).json()["status"] == "failed"


async def test_no_redirect_is_built_from_the_host_header(serve: Serve) -> None:
    """``GET /dashboard/`` with a forged Host is not redirected to that host."""
    async with serve() as app, client_of(app, headers={}) as http:
        for path in ("/dashboard/", "/sagas/", "/healthz/", "/docs/"):
            response = await http.get(path, headers={"host": "evil.example"})
            assert response.status_code == 404, path
            assert "location" not in response.headers


async def _terminate_backends(url: str, stop: asyncio.Event) -> int:
    """Terminate every other session of the database every 20 ms until ``stop``; how many."""
    conn = await asyncpg.connect(url)
    killed = 0
    try:
        while not stop.is_set():
            killed += len(
                await conn.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)
    finally:
        await conn.close()
    return killed


async def test_terminated_postgresql_connections_answer_503_with_a_message_never_500(
    serve: Serve, postgres_url: str
) -> None:
    """300 checkouts with connections cut every 20 ms: 2xx, 4xx or a JSON 503, never a 500."""
    async with (
        serve(database_url=postgres_url, checkout_wait_seconds=2) as app,
        client_of(app) as http,
    ):
        ids = [f"cut-{n}" for n in range(300)]
        for order_id in ids:
            created = await http.post("/orders", json={**ORDER, "order_id": order_id})
            assert created.status_code == 201
        stop = asyncio.Event()
        killer = asyncio.create_task(_terminate_backends(postgres_url, stop))
        answers = await asyncio.gather(*(http.post(f"/checkout/{i}") for i in ids))
        reads = await asyncio.gather(*(http.get(f"/orders/{i}", headers=ADMIN) for i in ids))
        stop.set()
        killed = await killer

    statuses = Counter(r.status_code for r in [*answers, *reads])
    assert killed > 0
    assert 500 not in statuses, statuses
    assert set(statuses) <= {200, 202, 400, 409, 503}, statuses
    for response in [*answers, *reads]:
        if response.status_code == 503:
            assert error_of(response, 503).startswith(("PostgreSQL", "store"))
