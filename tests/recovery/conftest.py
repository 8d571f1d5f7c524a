"""Real ``sagakit`` processes on one SQLite file, and read-only looks into that file.

Recovery tests start the CLI in a subprocess (``python -m tests.launch``: the CLI with
the fault hooks of ``tests/faults.py``), kill it with SIGKILL (or let ``SAGAKIT_CRASH_AT``
kill it), start it again and count the effects in the participants' tables. Every process
started here is killed and reaped at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

import httpx
import pytest

from tests.processes import (
    ACTIVE,
    ADMIN_TOKEN,
    Launcher,
    SagakitProcess,
    ServeProcess,
    free_port,
)

#: Short leases and polls, so a restarted process takes a dead one's sagas over at once.
BASE_ENV: Final = {
    "SAGAKIT_ADMIN_TOKEN": ADMIN_TOKEN,
    "SAGAKIT_LEASE_SECONDS": "1",
    "SAGAKIT_POLL_SECONDS": "0.2",
    "SAGAKIT_LOG_LEVEL": "info",
}


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the SQLite file ``path``, closed on exit."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        yield conn
    finally:
        conn.close()


class Sagakit(Launcher):
    """Starts ``sagakit`` processes on one database in ``tmp`` and reads that database."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, BASE_ENV)
        self.db_path = tmp / "shop.db"
        self.database_url = f"sqlite:///{self.db_path}"

    @staticmethod
    def _env(crash_at: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
        crash = {"SAGAKIT_CRASH_AT": crash_at} if crash_at is not None else {}
        return {**(extra or {}), **crash}

    async def serve(
        self, *, crash_at: str | None = None, env: Mapping[str, str] | None = None
    ) -> ServeProcess:
        """Start ``sagakit serve`` (with ``SAGAKIT_CRASH_AT`` if given); return once healthy."""
        port = free_port()
        args = ["serve", "--port", str(port), "--database-url", self.database_url]
        return await self.launch_server(port, args, self._env(crash_at, env))

    def worker(self, *, crash_at: str | None = None) -> SagakitProcess:
        """Start ``sagakit worker`` alone on the same database."""
        return self.launch(
            ["worker", "--database-url", self.database_url], self._env(crash_at, None)
        )

    # -- reading the database ------------------------------------------------------------

    def connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A read-only connection to the shop's database, closed on exit."""
        return read_only(self.db_path)

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
