"""Several real ``sagakit`` processes on one PostgreSQL database, and reads of that database.

Each process runs the CLI (``python -m sagakit.cli``) in a session of its own, so that a
signal reaches the whole tree (``serve --workers N`` is a supervisor and N children) and
teardown leaves nothing behind. The database is the ``postgres_url`` fixture's: migrated,
emptied for each test. Effects are counted in the participants' tables with asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, TypeVar

import asyncpg
import httpx
import pytest

from tests.recovery.conftest import ADMIN_HEADERS as ADMIN_HEADERS  # for the test modules
from tests.recovery.conftest import ADMIN_TOKEN, STARTUP_SECONDS, free_port

#: Short leases and polls, so that a dead process's sagas are taken over within seconds.
LEASE_SECONDS: Final = 1.0
POLL_SECONDS: Final = 0.2
BASE_ENV: Final = {
    "SAGAKIT_ADMIN_TOKEN": ADMIN_TOKEN,
    "SAGAKIT_LEASE_SECONDS": str(LEASE_SECONDS),
    "SAGAKIT_POLL_SECONDS": str(POLL_SECONDS),
    "SAGAKIT_LOG_LEVEL": "info",
    "SAGAKIT_LOG_FORMAT": "json",
}
ACTIVE: Final = ("running", "compensating")
#: What ``sagakit worker`` logs once it polls for sagas.
WORKER_READY: Final = "worker running on"

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float, what: str, every: float = 0.05
) -> T:
    """The first answer of ``check`` that is not ``None``; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (answer := await check()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(every)
    return answer


class SagakitProcess:
    """One ``sagakit`` command in a process group of its own, its output in a file."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.args = list(args)
        self.env = dict(env)
        self.log = log
        self._output: IO[bytes] = log.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "sagakit.cli", *args],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=self._output,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The process id (also its process group's id)."""
        return self.popen.pid

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def output(self) -> str:
        """What the process wrote so far (for failure messages)."""
        return self.log.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process and every child it started."""
        if self.alive:
            os.killpg(self.pid, sig)

    async def wait(self, timeout: float) -> int:
        """The exit code once the process has ended; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (code := self.popen.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.args[0]} still running after {timeout}s")
            await asyncio.sleep(0.02)
        return code

    async def wait_logged(self, text: str, timeout: float = STARTUP_SECONDS) -> None:
        """Return once the process has written ``text``; fail if it dies first."""

        async def logged() -> bool | None:
            if text in self.output():
                return True
            assert self.alive, f"{self.args[0]} exited:\n{self.output()}"
            return None

        await eventually(logged, timeout=timeout, what=f"{self.args[0]} logs {text!r}")

    async def kill(self) -> float:
        """SIGKILL the process group and reap it; the time (``time.time()``) of the kill."""
        killed_at = time.time()
        self.signal(signal.SIGKILL)
        await self.wait(10.0)
        return killed_at

    def close(self) -> None:
        """Kill the process group (whatever state it is in), reap it, close its log."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10.0)
        self._output.close()


class ServeProcess(SagakitProcess):
    """``sagakit serve`` on a port of its own, with an HTTP client factory."""

    def __init__(self, port: int, args: Sequence[str], env: Mapping[str, str], log: Path):
        super().__init__(args, env, log)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def client(self, timeout: float = 60.0) -> httpx.AsyncClient:
        """A client for this server with room for 200 requests at once (close it)."""
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        return httpx.AsyncClient(base_url=self.url, timeout=timeout, limits=limits)

    async def wait_healthy(self, timeout: float = STARTUP_SECONDS) -> None:
        """Return once ``GET /healthz`` answers 200; fail if the process dies first."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=1.0) as client:
            while True:
                if not self.alive:
                    raise AssertionError(f"sagakit serve exited at startup:\n{self.output()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"sagakit serve not healthy in {timeout}s")
                await asyncio.sleep(0.05)


@dataclass
class Cluster:
    """Starts ``sagakit`` processes on one PostgreSQL database and reads that database."""

    database_url: str
    tmp: Path
    processes: list[SagakitProcess] = field(default_factory=list)
    _conn: asyncpg.Connection[asyncpg.Record] | None = None

    def _log(self, kind: str) -> Path:
        return self.tmp / f"{len(self.processes):02d}-{kind}.log"

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
        process = ServeProcess(port, args, {**BASE_ENV, **(env or {})}, self._log("serve"))
        self.processes.append(process)
        await process.wait_healthy()
        return process

    async def worker(
        self, *, env: Mapping[str, str] | None = None, database_url: str | None = None
    ) -> SagakitProcess:
        """Start ``sagakit worker`` alone on the database; return once it polls."""
        args = ["worker", "--database-url", database_url or self.database_url]
        process = SagakitProcess(args, {**BASE_ENV, **(env or {})}, self._log("worker"))
        self.processes.append(process)
        await process.wait_logged(WORKER_READY)
        return process

    async def restart(self, process: SagakitProcess) -> SagakitProcess:
        """Start a dead process again with its arguments and environment (a serve: its port)."""
        assert not process.alive, "restart a process only once it is dead"
        if isinstance(process, ServeProcess):
            again = ServeProcess(process.port, process.args, process.env, self._log("serve"))
            self.processes.append(again)
            await again.wait_healthy()
            return again
        fresh = SagakitProcess(process.args, process.env, self._log("worker"))
        self.processes.append(fresh)
        await fresh.wait_logged(WORKER_READY)
        return fresh

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

    async def close(self) -> None:
        """Kill and reap every process started, and close the test's connection."""
        for process in self.processes:
            process.close()
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
        await launcher.close()
