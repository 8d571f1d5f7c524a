"""Real ``sagakit`` processes on one SQLite file, and read-only looks into that file.

Recovery tests start the CLI in a subprocess (``python -m sagakit.cli``), kill it with
SIGKILL (or let ``SAGAKIT_CRASH_AT`` kill it), start it again and count the effects in the
participants' tables. Every process started here is killed and reaped at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Final

import httpx
import pytest

ADMIN_TOKEN: Final = "recovery-admin-token"
ADMIN_HEADERS: Final = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: Short leases and polls, so a restarted process takes a dead one's sagas over at once.
BASE_ENV: Final = {
    "SAGAKIT_ADMIN_TOKEN": ADMIN_TOKEN,
    "SAGAKIT_LEASE_SECONDS": "1",
    "SAGAKIT_POLL_SECONDS": "0.2",
    "SAGAKIT_LOG_LEVEL": "info",
}
STARTUP_SECONDS: Final = 20.0
ACTIVE: Final = ("running", "compensating")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SagakitProcess:
    """One ``sagakit serve`` or ``sagakit worker`` subprocess, its stderr in a file."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.args = list(args)
        self.log = log
        self._stderr: IO[bytes] = log.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "sagakit.cli", *args],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            # Its own process group, so that `serve --workers N` children die with it.
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def output(self) -> str:
        """What the process wrote so far (for failure messages)."""
        return self.log.read_text(errors="replace")

    async def wait(self, timeout: float) -> int:
        """The exit code once the process has ended; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (code := self.popen.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"sagakit {self.args[0]} still running after {timeout}s:\n{self.output()}"
                )
            await asyncio.sleep(0.02)
        return code

    def _kill_group(self) -> None:
        # The group outlives its leader while children live; the id is not reused until then.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    async def kill(self) -> int:
        """SIGKILL the process (and any children it started) and reap it; its exit code."""
        self._kill_group()
        return await self.wait(10.0)

    async def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM the process and wait up to ``timeout`` seconds for it to exit."""
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
        return await self.wait(timeout)

    def close(self) -> None:
        """Kill the process and its children, reap it, and close its log file."""
        self._kill_group()
        try:
            self.popen.wait(10.0)
        finally:
            self._stderr.close()


class ServeProcess(SagakitProcess):
    """``sagakit serve`` on a free port, with an HTTP client factory."""

    def __init__(self, port: int, args: Sequence[str], env: Mapping[str, str], log: Path):
        super().__init__(args, env, log)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def client(self) -> httpx.AsyncClient:
        """A client for this server, with room for 100 requests at once (close it)."""
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        return httpx.AsyncClient(base_url=self.url, timeout=60.0, limits=limits)

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


class Sagakit:
    """Starts ``sagakit`` processes on one database in ``tmp`` and reads that database."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.db_path = tmp / "shop.db"
        self.database_url = f"sqlite:///{self.db_path}"
        self.processes: list[SagakitProcess] = []

    def _env(self, crash_at: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
        env = {**BASE_ENV, **(extra or {})}
        if crash_at is not None:
            env["SAGAKIT_CRASH_AT"] = crash_at
        return env

    def _log(self, kind: str) -> Path:
        return self.tmp / f"{len(self.processes):02d}-{kind}.stderr.log"

    async def serve(
        self, *, crash_at: str | None = None, env: Mapping[str, str] | None = None
    ) -> ServeProcess:
        """Start ``sagakit serve`` (with ``SAGAKIT_CRASH_AT`` if given); return once healthy."""
        port = free_port()
        args = ["serve", "--port", str(port), "--database-url", self.database_url]
        process = ServeProcess(port, args, self._env(crash_at, env), self._log("serve"))
        self.processes.append(process)
        await process.wait_healthy()
        return process

    def worker(self, *, crash_at: str | None = None) -> SagakitProcess:
        """Start ``sagakit worker`` alone on the same database."""
        args = ["worker", "--database-url", self.database_url]
        process = SagakitProcess(args, self._env(crash_at, None), self._log("worker"))
        self.processes.append(process)
        return process

    # -- reading the database ------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection to the shop's database, closed on exit."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30.0)
        try:
            yield conn
        finally:
            conn.close()

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        """Every row of a read-only query."""
        with self.connect() as conn:
            return [tuple(row) for row in conn.execute(sql, params).fetchall()]

    def scalar(self, sql: str, params: Sequence[object] = ()) -> object:
        """The first column of the first row of a read-only query."""
        with self.connect() as conn:
            row = conn.execute(sql, params).fetchone()
        assert row is not None, sql
        return row[0]

    def integer(self, sql: str, params: Sequence[object] = ()) -> int:
        """A read-only query's single integer answer."""
        value = self.scalar(sql, params)
        assert isinstance(value, int), (sql, value)
        return value

    def balance(self, user_id: str) -> int:
        """The user's balance, from the table."""
        return self.integer("SELECT balance FROM users WHERE user_id = ?", (user_id,))

    def stock(self, item_id: str) -> int:
        """The item's stock, from the table."""
        return self.integer("SELECT stock FROM items WHERE item_id = ?", (item_id,))

    def saga_ids(self, order_id: str) -> list[str]:
        """The ids of every checkout saga of ``order_id``, oldest first."""
        rows = self.rows(
            "SELECT saga_id FROM saga_instances WHERE name = 'checkout' AND business_key = ?"
            " ORDER BY seq",
            (order_id,),
        )
        return [str(row[0]) for row in rows]

    def active_sagas(self) -> int:
        """How many sagas are still running or compensating."""
        return self.integer("SELECT count(*) FROM saga_instances WHERE status IN (?, ?)", ACTIVE)

    def statuses(self) -> dict[str, int]:
        """Saga counts by status."""
        rows = self.rows("SELECT status, count(*) FROM saga_instances GROUP BY status")
        return {str(status): int(str(count)) for status, count in rows}

    async def wait_all_finished(self, timeout: float = 30.0) -> None:
        """Return once no saga is running or compensating; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.active_sagas():
            if time.monotonic() > deadline:
                raise AssertionError(f"sagas still active after {timeout}s: {self.statuses()}")
            await asyncio.sleep(0.1)

    async def wait_for_saga(self, order_id: str, timeout: float = 10.0) -> str:
        """The id of the order's first saga, once one is recorded."""
        deadline = time.monotonic() + timeout
        while not (ids := self.saga_ids(order_id)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no saga recorded for {order_id} in {timeout}s")
            await asyncio.sleep(0.05)
        return ids[0]

    def close(self) -> None:
        """Kill and reap every process started."""
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.close()


@pytest.fixture
async def sagakit(tmp_path: Path) -> AsyncIterator[Sagakit]:
    """A launcher of ``sagakit`` processes on a fresh database; kills them all at teardown."""
    launcher = Sagakit(tmp_path)
    try:
        yield launcher
    finally:
        launcher.close()


async def wait_saga_finished(
    client: httpx.AsyncClient, saga_id: str, timeout: float = 15.0
) -> dict[str, object]:
    """``GET /sagas/{id}`` once the saga has ended; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/sagas/{saga_id}")
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        if body["status"] not in ACTIVE:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"saga {saga_id} still {body['status']} after {timeout}s")
        await asyncio.sleep(0.05)
