"""``/readyz``: a real write and the schema version, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from sagakit.store.readiness import expected_versions
from tests.api.conftest import Serve, client_of
from tests.api.support import error_of, json_of


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``path`` made immutable (``chattr +i``: even root cannot write it) for the block."""
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def ready(http: httpx.AsyncClient) -> httpx.Response:
    """``GET /readyz`` (no token needed)."""
    return await http.get("/readyz", headers={"authorization": ""})


async def test_readyz_answers_200_with_the_schema_versions_on_sqlite(serve: Serve) -> None:
    """A writable store with every migration applied is ready; the versions are listed."""
    async with serve() as app, client_of(app, headers={}) as http:
        response = await ready(http)
    assert response.status_code == 200
    assert json_of(response) == {"status": "ready", "schema": expected_versions("sqlite")}


async def test_readyz_answers_503_while_the_sqlite_file_refuses_writes_and_200_after(
    serve: Serve, tmp_path: Path
) -> None:
    """An immutable write-ahead log makes every write fail: 503 saying so; then 200 again."""
    async with serve() as app, client_of(app, headers={}) as http:
        assert (await ready(http)).status_code == 200
        with immutable(tmp_path / "shop.db-wal"):
            refused = await ready(http)
            alive = await http.get("/healthz")
        again = await ready(http)
    assert "store refuses writes" in error_of(refused, 503)
    assert alive.status_code == 200
    assert again.status_code == 200


async def test_readyz_answers_503_when_the_schema_is_behind(serve: Serve, tmp_path: Path) -> None:
    """A database whose newest migration is missing is not ready; the answer names it."""
    async with serve() as app, client_of(app, headers={}) as http:
        db = app.state.service.store.db
        await db.write(
            lambda conn: conn.execute(
                "DELETE FROM sagakit_migrations WHERE component = 'operations' AND version = 2"
            )
        )
        response = await ready(http)
    message = error_of(response, 503)
    assert message == "operations schema at version 1, this code expects 2"


async def _on_database(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


TERMINATE = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


async def test_readyz_follows_postgresql_refusing_writes_and_accepting_them_again(
    serve: Serve, postgres_url: str
) -> None:
    """Made read-only (connections cut, new ones read-only): 503; writable again: 200."""
    name = postgres_url.rpartition("/")[2]
    async with serve(database_url=postgres_url) as app, client_of(app, headers={}) as http:
        ok = await ready(http)
        try:
            await _on_database(
                postgres_url,
                f'ALTER DATABASE "{name}" SET default_transaction_read_only = on',
                TERMINATE,
            )
            refused = [await ready(http) for _ in range(3)]
        finally:
            await _on_database(
                postgres_url,
                "SET default_transaction_read_only = off",
                f'ALTER DATABASE "{name}" RESET default_transaction_read_only',
                TERMINATE,
            )
        again = [(await ready(http)).status_code for _ in range(25)]
    assert ok.status_code == 200
    assert json_of(ok)["schema"] == expected_versions("postgres")
    for response in refused:
        assert "store refuses writes" in error_of(response, 503)
    assert again[-1] == 200
    assert set(again) <= {200, 503}


@pytest.mark.parametrize("rounds", [3])
async def test_readyz_after_connections_are_terminated_answers_503_or_200_never_500(
    serve: Serve, postgres_url: str, rounds: int
) -> None:
    """Cut connections make probes fail with 503 at worst, until the pool has reconnected."""
    async with serve(database_url=postgres_url) as app, client_of(app, headers={}) as http:
        for _ in range(rounds):
            await _on_database(postgres_url, TERMINATE)
            # Each dead pooled connection fails one probe at most; then the pool reconnects.
            answers = [await ready(http) for _ in range(25)]
            assert answers[-1].status_code == 200
            for answer in answers:
                if answer.status_code != 200:
                    assert "store refuses writes" in error_of(answer, 503)
