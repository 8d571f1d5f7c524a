"""Closing SQLite: every connection opened is closed, one after the other, and the WAL goes.

SQLite deletes the write-ahead log (``-wal``) when the last connection to the file closes:
that connection takes an exclusive lock, checkpoints and removes it. Two connections of one
process closing at the same moment each still see the other's shared lock, so neither is
"the last" and the log stays on disk (what ``test_sigterm_stops_serve_gracefully_and_releases
_its_leases`` saw once in three CI runs). Here every connection is tracked: its ``close``
lingers a moment, which makes two closes overlap whenever the code lets them.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from sagakit.service import create_app
from sagakit.settings import Settings
from sagakit.startup import check_database
from sagakit.store.sqlite_db import SqliteDatabase

#: How long a tracked connection's ``close`` waits before closing: long enough that two
#: closes started together overlap for certain, short enough to keep the tests quick.
LINGER: Final = 0.05
TOKEN: Final = "close-test-token"


class Tracker:
    """Every connection ``sqlite3.connect`` opened while installed, and when each closed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened: list[TrackedConnection] = []
        #: (start, end) of every ``close``, by ``time.monotonic()``.
        self.closes: list[tuple[float, float]] = []

    def overlapping(self) -> list[tuple[tuple[float, float], tuple[float, float]]]:
        """The pairs of closes that ran at the same time."""
        spans = sorted(self.closes)
        return [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]

    def unclosed(self) -> list[str]:
        """The connections still open, by where they were opened."""
        return [c.origin for c in self.opened if not c.closed]


class TrackedConnection(sqlite3.Connection):
    """A connection that tells its tracker when it closes (and lingers first)."""

    tracker: Tracker
    origin: str
    closed: bool

    def close(self) -> None:
        start = time.monotonic()
        time.sleep(LINGER)
        super().close()
        self.closed = True
        with self.tracker.lock:
            self.tracker.closes.append((start, time.monotonic()))


@pytest.fixture
def tracker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tracker]:
    """Track every SQLite connection opened in this process during the test."""
    tracker = Tracker()
    real_connect: Callable[..., sqlite3.Connection] = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, factory=TrackedConnection, **kwargs)
        assert isinstance(conn, TrackedConnection)
        conn.tracker = tracker
        conn.origin = threading.current_thread().name
        conn.closed = False
        with tracker.lock:
            tracker.opened.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    yield tracker
    for conn in tracker.opened:  # whatever the test left open, so that the file is freed
        if not conn.closed:
            sqlite3.Connection.close(conn)


async def test_closing_the_database_closes_its_connections_one_after_the_other(
    tracker: Tracker, tmp_path: Path
) -> None:
    """After ``close``: no connection open, no two closes at once, and no ``-wal`` file."""
    path = tmp_path / "one.db"
    db = SqliteDatabase(str(path))
    db.start()
    await db.write(lambda conn: conn.execute("CREATE TABLE t (x INTEGER)"))
    await db.write(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
    assert await db.read(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()) == (1,)
    await db.close()

    assert len(tracker.opened) == 2  # the writer's and the reader's
    assert tracker.unclosed() == []
    assert tracker.overlapping() == []
    assert not path.with_name("one.db-wal").exists()


async def test_a_database_opened_and_closed_a_hundred_times_never_leaves_its_log(
    tmp_path: Path,
) -> None:
    """The outcome itself, with no tracking: before the closes were ordered, about one
    round in ten left ``-wal`` behind."""
    left = []
    for round_ in range(100):
        path = tmp_path / f"{round_}.db"
        db = SqliteDatabase(str(path))
        db.start()
        await db.write(lambda conn: conn.execute("CREATE TABLE t (x INTEGER)"))
        await db.read(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone())
        await db.close()
        if path.with_name(f"{round_}.db-wal").exists():
            left.append(round_)
    assert left == []


async def test_the_service_closes_every_sqlite_connection_it_opens(
    tracker: Tracker, tmp_path: Path
) -> None:
    """What ``sagakit serve`` opens on SQLite (the start-up check, then the app: store, shop,
    sessions, readiness, activity, a checkout) is all closed when its lifespan ends, one
    connection after the other, and the write-ahead log is gone."""
    path = tmp_path / "shop.db"
    settings = Settings(database_url=f"sqlite:///{path}", admin_token=TOKEN)
    await asyncio.to_thread(check_database, settings)
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as client,
    ):
        assert (await client.post("/checkout/order1")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/sagas")).status_code == 200
        login = await client.post("/dashboard/login", data={"token": TOKEN})
        assert login.status_code == 303

    assert tracker.opened, "no SQLite connection was tracked"
    assert tracker.unclosed() == []
    assert tracker.overlapping() == []
    assert not path.with_name("shop.db-wal").exists()
