"""Fixtures shared by every tier: a saga store of each backend, and PostgreSQL databases.

PostgreSQL tests run against the real server on this machine (``SAGAKIT_TEST_POSTGRES_URL``,
default ``postgresql://postgres@127.0.0.1:5432/postgres``). One database is migrated per run;
each test gets it emptied of every row, which costs a few milliseconds.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from sagakit.shop.postgres import PostgresShop
from sagakit.store import MemoryStore, SagaStore
from sagakit.store.postgres import PostgresStore
from sagakit.store.postgres_db import PostgresDatabase
from sagakit.store.sessions import COMPONENT as SESSIONS
from sagakit.store.sessions import PostgresSessions
from sagakit.store.sqlite import SqliteStore

BACKENDS = ["memory", "sqlite", "postgres"]
ADMIN_URL = os.environ.get(
    "SAGAKIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def database_url(name: str) -> str:
    """The URL of database ``name`` on the test server."""
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


async def _admin(*statements: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _build_template(name: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    db = await PostgresDatabase.connect(database_url(name), min_size=1, max_size=1)
    try:
        await db.migrate("sagas", "sagakit.store.migrations.postgres")
        await PostgresShop(db).migrate()
        await PostgresSessions(db).db.migrate(
            SESSIONS, "sagakit.store.migrations.operations.postgres"
        )
    finally:
        await db.close()


def _run_apart(coro: Coroutine[object, object, None]) -> None:
    """Run ``coro`` on a loop of its own (a session fixture may start inside a test's loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database with every migration applied, made once per run, dropped at the end."""
    name = f"sagakit_test_{os.getpid()}"
    _run_apart(_build_template(name))
    yield name
    _run_apart(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _empty(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        # Fails fast, rather than hanging, if a previous test leaked a connection.
        await conn.execute("SET lock_timeout = '5s'")
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'sagakit_migrations'"
        )
        names = ", ".join(f'"{t["tablename"]}"' for t in tables)
        await conn.execute(f"TRUNCATE {names} RESTART IDENTITY")
    finally:
        await conn.close()


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """The URL of a migrated PostgreSQL database emptied for this test.

    Emptying (TRUNCATE) takes milliseconds where creating a database from a template takes
    most of a second on this machine's disk; both give each test a fresh, migrated store.
    """
    url = database_url(postgres_database)
    _run_apart(_empty(url))
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of a fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'sagas.db'}"


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[SagaStore]:
    """A fresh, empty store of each backend in turn."""
    backend: SagaStore
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "sqlite":
        backend = await SqliteStore.open(sqlite_url)
    else:
        url = request.getfixturevalue("postgres_url")
        backend = await PostgresStore.open(url)
    try:
        yield backend
    finally:
        await backend.close()
