"""A PostgreSQL server that refuses new connections (``too many clients``) while the pool
still holds some: a request waits for one of the pool's own rather than failing.

The machine's server is shared (``max_connections`` 100 for several test suites at once),
so it is not filled here: a role limited to a few connections refuses the same way
(SQLSTATE 53300, ``TooManyConnectionsError``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from sagakit.errors import StoreError
from sagakit.store.postgres_db import PostgresDatabase

#: How many connections the role may hold at once; its pools may want more.
LIMIT: Final = 2


def _as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


@pytest.fixture
async def limited_url(postgres_url: str) -> AsyncIterator[str]:
    """The test database's URL as a fresh role allowed ``LIMIT`` connections at once."""
    role = f"sagakit_limited_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT {LIMIT}")
        yield _as_role(postgres_url, role)
    finally:
        # Whatever the pools left behind, then the role.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


async def test_requests_beyond_what_the_server_allows_wait_for_the_pools_connections(
    limited_url: str,
) -> None:
    """Twenty uses at once of a pool of up to ten, on a server that lets it open two: every
    use is served, on the two connections, none fails with ``too many clients``."""
    db = await PostgresDatabase.connect(limited_url, min_size=1, max_size=10)
    used: set[int] = set()

    async def use() -> None:
        async with db.connection("probe") as conn:
            used.add(await conn.fetchval("SELECT pg_backend_pid()"))
            await asyncio.sleep(0.05)

    try:
        await asyncio.gather(*(use() for _ in range(20)))
    finally:
        await db.close()
    assert len(used) == LIMIT


async def test_a_pool_the_server_refuses_every_connection_fails_at_once(
    limited_url: str,
) -> None:
    """With no connection of its own to wait for, a refused pool says so at once."""
    holders = [await asyncpg.connect(limited_url) for _ in range(LIMIT)]
    db = await PostgresDatabase.connect(limited_url, min_size=0, max_size=5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(StoreError, match="too many connections"):
            async with db.connection("probe"):
                pass
    finally:
        await db.close()
        for conn in holders:
            await conn.close()
    assert loop.time() - started < 5.0
