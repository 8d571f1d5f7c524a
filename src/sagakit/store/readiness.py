"""Readiness: does the store accept a write now, and is its schema the one this code expects?

``GET /readyz`` asks both. The write is real: one row of ``sagakit_readiness`` is written
through the same path every saga transition takes (SQLite's group commit, a pooled
PostgreSQL connection in a transaction), so a read-only file, a full disk, a read-only
database or connections cut by the server all show.
"""

from __future__ import annotations

import sqlite3
from importlib import resources
from typing import Final

from sagakit.store.base import SagaStore

UPSERT_SQLITE: Final = (
    "INSERT INTO sagakit_readiness (id, probed_at) VALUES (1, ?)"
    " ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at"
)
UPSERT_POSTGRES: Final = (
    "INSERT INTO sagakit_readiness (id, probed_at) VALUES (1, $1)"
    " ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at"
)
VERSIONS: Final = "SELECT component, max(version) FROM sagakit_migrations GROUP BY component"
#: The migration packages of each component the checkout service's database holds.
COMPONENTS: Final = {
    "sagas": "sagakit.store.migrations.{kind}",
    "shop": "sagakit.shop.migrations.{kind}",
    "operations": "sagakit.store.migrations.operations.{kind}",
}


def _kind(store: SagaStore) -> str | None:
    name = type(store).__name__
    return {"SqliteStore": "sqlite", "PostgresStore": "postgres"}.get(name)


def expected_versions(kind: str) -> dict[str, int]:
    """The newest migration this code ships, per component, for ``sqlite`` or ``postgres``."""
    expected: dict[str, int] = {}
    for component, package in COMPONENTS.items():
        files = resources.files(package.format(kind=kind)).iterdir()
        numbers = [int(f.name.split("_", 1)[0]) for f in files if f.name.endswith(".sql")]
        expected[component] = max(numbers, default=0)
    return expected


async def probe_write(store: SagaStore, at: float) -> None:
    """Write the readiness row; raises ``StoreError`` when the store refuses."""
    kind = _kind(store)
    db = getattr(store, "db", None)
    if kind == "sqlite":
        from sagakit.store.sqlite_db import SqliteDatabase

        assert isinstance(db, SqliteDatabase)
        await db.write(lambda conn: conn.execute(UPSERT_SQLITE, (at,)))
    elif kind == "postgres":
        from sagakit.store.postgres_db import PostgresDatabase

        assert isinstance(db, PostgresDatabase)
        async with db.transaction("readiness probe") as conn:
            await conn.execute(UPSERT_POSTGRES, at)


async def applied_versions(store: SagaStore) -> dict[str, int]:
    """The newest migration applied to the store's database, per component."""
    kind = _kind(store)
    db = getattr(store, "db", None)
    if kind == "sqlite":
        from sagakit.store.sqlite_db import SqliteDatabase

        assert isinstance(db, SqliteDatabase)

        def work(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            return list(conn.execute(VERSIONS).fetchall())

        return dict(await db.read(work))
    if kind == "postgres":
        from sagakit.store.postgres_db import PostgresDatabase

        assert isinstance(db, PostgresDatabase)
        async with db.connection("schema version") as conn:
            return {r[0]: r[1] for r in await conn.fetch(VERSIONS)}
    return {}


async def schema_problems(store: SagaStore) -> list[str]:
    """What is wrong with the schema (empty when it is current): one phrase per component."""
    kind = _kind(store)
    if kind is None:
        return []
    applied = await applied_versions(store)
    problems = []
    for component, version in expected_versions(kind).items():
        found = applied.get(component, 0)
        if found != version:
            problems.append(f"{component} schema at version {found}, this code expects {version}")
    return problems
