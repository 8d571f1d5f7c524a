"""Dashboard sessions kept in the saga store's own database (memory, SQLite, PostgreSQL).

A session lives in the database, not in the cookie, so a sign-in on one process is honoured
by every process on the same database, and a sign-out ends it everywhere at once. Rows are
keyed by the SHA-256 digest of the session id: the id itself is only ever in the cookie.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final, Protocol

from sagakit.errors import StoreError
from sagakit.store.base import SagaStore

#: The migration component of the operator's tables (sessions, the readiness probe).
COMPONENT: Final = "operations"
COLUMNS: Final = "id_digest, role, label, credential, created_at, expires_at"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRecord:
    """One signed-in session, as stored."""

    id_digest: str
    role: str
    #: The first characters of the session id: how the history names who acted.
    label: str
    #: A digest of the tokens the session was opened with (see ``sagakit.api.sessions``).
    credential: str
    created_at: float
    expires_at: float


class SessionStore(Protocol):
    """Where sessions are kept."""

    async def add(self, record: SessionRecord) -> None:
        """Keep ``record``."""
        ...

    async def find(self, id_digest: str, *, now: float) -> SessionRecord | None:
        """The session of ``id_digest`` unless it expired by ``now``."""
        ...

    async def remove(self, id_digest: str) -> None:
        """Forget one session (sign-out)."""
        ...

    async def prune(self, credentials: Collection[str], *, now: float) -> int:
        """Forget expired sessions and those opened with tokens no longer valid; how many."""
        ...


class MemorySessions:
    """Sessions in this process's memory (for the memory store and tests)."""

    def __init__(self) -> None:
        self._rows: dict[str, SessionRecord] = {}

    async def add(self, record: SessionRecord) -> None:
        self._rows[record.id_digest] = record

    async def find(self, id_digest: str, *, now: float) -> SessionRecord | None:
        record = self._rows.get(id_digest)
        return record if record is not None and record.expires_at > now else None

    async def remove(self, id_digest: str) -> None:
        self._rows.pop(id_digest, None)

    async def prune(self, credentials: Collection[str], *, now: float) -> int:
        gone = [
            key
            for key, r in self._rows.items()
            if r.expires_at <= now or r.credential not in credentials
        ]
        for key in gone:
            del self._rows[key]
        return len(gone)


def _record(row: tuple[object, ...] | None) -> SessionRecord | None:
    if row is None:
        return None
    digest, role, label, credential, created, expires = row
    return SessionRecord(
        id_digest=str(digest),
        role=str(role),
        label=str(label),
        credential=str(credential),
        created_at=float(str(created)),
        expires_at=float(str(expires)),
    )


class SqliteSessions:
    """Sessions in the SQLite store's file, written through its group commit."""

    def __init__(self, db: object) -> None:
        from sagakit.store.sqlite_db import SqliteDatabase

        assert isinstance(db, SqliteDatabase)
        self.db = db

    async def add(self, record: SessionRecord) -> None:
        values = (
            record.id_digest,
            record.role,
            record.label,
            record.credential,
            record.created_at,
            record.expires_at,
        )
        await self.db.write(
            lambda conn: conn.execute(
                f"INSERT INTO sagakit_sessions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", values
            )
        )

    async def find(self, id_digest: str, *, now: float) -> SessionRecord | None:
        def work(conn: sqlite3.Connection) -> tuple[object, ...] | None:
            row: tuple[object, ...] | None = conn.execute(
                f"SELECT {COLUMNS} FROM sagakit_sessions WHERE id_digest = ? AND expires_at > ?",
                (id_digest, now),
            ).fetchone()
            return row

        return _record(await self.db.read(work))

    async def remove(self, id_digest: str) -> None:
        await self.db.write(
            lambda conn: conn.execute(
                "DELETE FROM sagakit_sessions WHERE id_digest = ?", (id_digest,)
            )
        )

    async def prune(self, credentials: Collection[str], *, now: float) -> int:
        marks = ", ".join("?" * len(credentials))
        stale = f"credential NOT IN ({marks})" if credentials else "credential = credential"
        sql = f"DELETE FROM sagakit_sessions WHERE expires_at <= ? OR {stale}"
        count: int = await self.db.write(
            lambda conn: conn.execute(sql, (now, *credentials)).rowcount
        )
        return count


class PostgresSessions:
    """Sessions in the PostgreSQL store's database, shared by every process on it."""

    def __init__(self, db: object) -> None:
        from sagakit.store.postgres_db import PostgresDatabase

        assert isinstance(db, PostgresDatabase)
        self.db = db

    async def add(self, record: SessionRecord) -> None:
        async with self.db.connection("session sign-in") as conn:
            await conn.execute(
                f"INSERT INTO sagakit_sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
                record.id_digest,
                record.role,
                record.label,
                record.credential,
                record.created_at,
                record.expires_at,
            )

    async def find(self, id_digest: str, *, now: float) -> SessionRecord | None:
        async with self.db.connection("session lookup") as conn:
            row = await conn.fetchrow(
                f"SELECT {COLUMNS} FROM sagakit_sessions WHERE id_digest = $1 AND expires_at > $2",
                id_digest,
                now,
            )
        return _record(tuple(row) if row is not None else None)

    async def remove(self, id_digest: str) -> None:
        async with self.db.connection("session sign-out") as conn:
            await conn.execute("DELETE FROM sagakit_sessions WHERE id_digest = $1", id_digest)

    async def prune(self, credentials: Collection[str], *, now: float) -> int:
        async with self.db.connection("session pruning") as conn:
            status = await conn.execute(
                "DELETE FROM sagakit_sessions WHERE expires_at <= $1"
                " OR NOT (credential = ANY($2::text[]))",
                now,
                list(credentials),
            )
        return int(status.rsplit(" ", 1)[-1])


async def open_sessions(store: SagaStore) -> SessionStore:
    """The session table in ``store``'s database, migrated; in memory for the memory store."""
    from sagakit.store.memory import MemoryStore

    if isinstance(store, MemoryStore):
        return MemorySessions()
    # Compared by name, so that no driver is imported for a store that does not use it.
    kind = type(store).__name__
    db = getattr(store, "db", None)
    if kind == "SqliteStore":
        sqlite = SqliteSessions(db)
        await asyncio.to_thread(
            sqlite.db.migrate, COMPONENT, "sagakit.store.migrations.operations.sqlite"
        )
        return sqlite
    if kind == "PostgresStore":
        postgres = PostgresSessions(db)
        await postgres.db.migrate(COMPONENT, "sagakit.store.migrations.operations.postgres")
        return postgres
    raise StoreError(f"no session table for {kind}")
