"""Several real ``sagakit`` processes on one PostgreSQL database, and reads of that database.

The processes are those of ``tests.processes`` (the CLI in a session of its own, so that a
signal reaches the whole tree and teardown leaves nothing behind). The database is the
``postgres_url`` fixture's: migrated, emptied for each test. Effects are counted in the
participants' tables with asyncpg.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Final

import asyncpg
import pytest

from tests.processes import (
    ACTIVE,
    ADMIN_TOKEN,
    Launcher,
    SagakitProcess,
    ServeProcess,
    eventually,
    free_port,
)

#: Short leases and polls, so that a dead process's sagas are taken over within seconds.
LEASE_SECONDS: Final = 1.0
POLL_SECONDS: Final = 0.2
BASE_ENV: Final = {
    "SAGAKIT_ADMIN_TOKEN": ADMIN_TOKEN,
    "SAGAKIT_LEASE_SECONDS": str(LEASE_SECONDS),
    "SAGAKIT_POLL_SECONDS": str(POLL_SECONDS),
    "SAGAKIT_LOG_LEVEL": "info",
    "SAGAKIT_LOG_FORMAT": "json",
    # The per-transition writes, whose sagas a kill or a pause can catch mid-flight; the
    # one-unit checkout leaves none (tests that want it set it back on).
    "SAGAKIT_ONE_UNIT": "false",
}
#: What ``sagakit worker`` logs once it polls for sagas.
WORKER_READY: Final = "worker running on"


class Cluster(Launcher):
    """Starts ``sagakit`` processes on one PostgreSQL database and reads that database."""

    def __init__(self, database_url: str, tmp: Path) -> None:
        super().__init__(tmp, BASE_ENV)
        self.database_url = database_url
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None

    async def serve(
        self,
        *,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        database_url: str | None = None,
    ) -> ServeProcess:
        """Start ``sagakit serve`` on a free port; return once it answers ``/healthz``."""
        port = free_port()
        args = ["serve", "--port", str(port), "--database-url", database_url or self.database_url]
        if workers > 1:
            args += ["--workers", str(workers)]
        return await self.launch_server(port, args, env)

    async def worker(
        self, *, env: Mapping[str, str] | None = None, database_url: str | None = None
    ) -> SagakitProcess:
        """Start ``sagakit worker`` alone on the database; return once it polls."""
        process = self.launch(["worker", "--database-url", database_url or self.database_url], env)
        await process.wait_logged(WORKER_READY)
        return process

    async def restart(self, process: SagakitProcess, *, ready: str | None = None) -> SagakitProcess:
        """Start a dead process again (a serve: on its port; a worker: until it polls)."""
        if ready is None and not isinstance(process, ServeProcess):
            ready = WORKER_READY
        return await super().restart(process, ready=ready)

    # -- reading the database ------------------------------------------------------------

    async def connection(self) -> asyncpg.Connection[asyncpg.Record]:
        """The test's own connection to the database (opened on first use)."""
        if self._conn is None:
            self._conn = await asyncpg.connect(self.database_url)
        return self._conn

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """Every row of a query."""
        return await (await self.connection()).fetch(sql, *args)

    async def integer(self, sql: str, *args: object) -> int:
        """A query's single integer answer."""
        value = await (await self.connection()).fetchval(sql, *args)
        assert isinstance(value, int), (sql, value)
        return value

    async def statuses(self) -> dict[str, int]:
        """Saga counts by status."""
        rows = await self.fetch("SELECT status, count(*) AS n FROM saga_instances GROUP BY 1")
        return {row["status"]: row["n"] for row in rows}

    async def balance(self, user_id: str) -> int:
        """The user's balance, from the table."""
        return await self.integer("SELECT balance FROM users WHERE user_id = $1", user_id)

    async def stock(self, item_id: str) -> int:
        """The item's stock, from the table."""
        return await self.integer("SELECT stock FROM items WHERE item_id = $1", item_id)

    async def saga_ids(self, order_id: str) -> list[str]:
        """The ids of every checkout saga of ``order_id``, oldest first."""
        rows = await self.fetch(
            "SELECT saga_id FROM saga_instances WHERE name = 'checkout' AND business_key = $1"
            " ORDER BY seq",
            order_id,
        )
        return [row["saga_id"] for row in rows]

    async def events(self, saga_id: str) -> list[asyncpg.Record]:
        """The saga's history rows (``at``, ``type``, ``step``, ``detail``), in order."""
        return await self.fetch(
            "SELECT at, type, step, detail FROM saga_events WHERE saga_id = $1 ORDER BY id",
            saga_id,
        )

    async def fence(self, saga_id: str) -> int:
        """The saga's fence number."""
        return await self.integer("SELECT fence FROM saga_instances WHERE saga_id = $1", saga_id)

    async def wait_all_finished(self, timeout: float) -> None:
        """Return once no saga is running or compensating; fail after ``timeout`` seconds."""

        async def finished() -> bool | None:
            statuses = await self.statuses()
            return True if not any(statuses.get(s) for s in ACTIVE) else None

        await eventually(finished, timeout=timeout, what="every saga finished", every=0.1)

    async def aclose(self) -> None:
        """Kill and reap every process started, and close the test's connection."""
        self.close()
        if self._conn is not None:
            await self._conn.close()


class RowLock:
    """A user's row held by the test (``SELECT ... FOR UPDATE`` in an open transaction).

    A payment debits the buyer's row, so while the lock is held the checkout's payment step
    waits inside its own transaction: a step as slow as the test wants it.
    """

    def __init__(self, database_url: str, user_id: str) -> None:
        self.database_url = database_url
        self.user_id = user_id
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None
        #: The server process id of the test's locking connection.
        self.backend = 0

    async def __aenter__(self) -> RowLock:
        self._conn = await asyncpg.connect(self.database_url)
        self.backend = self._conn.get_server_pid()
        await self._conn.execute("BEGIN")
        row = await self._conn.fetchrow(
            "SELECT balance FROM users WHERE user_id = $1 FOR UPDATE", self.user_id
        )
        assert row is not None, f"no user {self.user_id}"
        return self

    async def release(self) -> None:
        """End the transaction, freeing the row (once; later calls do nothing)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.execute("ROLLBACK")
            finally:
                await conn.close()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()


async def blocked_by(cluster: Cluster, backend: int) -> list[int]:
    """The server processes of the database waiting for a lock that ``backend`` holds."""
    rows = await cluster.fetch(
        "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", backend
    )
    return [row["pid"] for row in rows]


async def first_blocked_by(cluster: Cluster, backend: int, what: str) -> int:
    """The first server process seen waiting for ``backend``'s lock (within ten seconds)."""

    async def waiting() -> int | None:
        pids = await blocked_by(cluster, backend)
        return pids[0] if pids else None

    return await eventually(waiting, timeout=10.0, what=what)


def owned_by(pid: int) -> str:
    """A ``LIKE`` pattern for the owner ids (``host:pid:nonce``) of process ``pid``."""
    return f"%:{pid}:%"


@pytest.fixture
async def cluster(postgres_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    """A launcher of ``sagakit`` processes on an emptied database; kills them all at teardown."""
    launcher = Cluster(postgres_url, tmp_path)
    try:
        yield launcher
    finally:
        await launcher.aclose()
