"""An SQLite database used from asyncio: one writer thread with group commit, one reader thread.

Writes are functions of a connection, queued to the writer thread. The writer takes every
function waiting in the queue, runs each inside its own savepoint of one ``BEGIN IMMEDIATE``
transaction, commits once (one fsync for the whole batch), and only then resolves the
callers' futures: nothing is acknowledged before it is on disk. A function that raises rolls
back its own savepoint and nothing else.

The saga store and the checkout domain share one database, and so one writer.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from importlib import resources
from typing import Final, TypeVar

from sagakit.errors import StoreError

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]
#: A function queued to a thread, and the caller's future for its outcome.
Job = tuple[Work[object], asyncio.Future[object]]
#: A caller's future, and the value or the error to settle it with.
Outcome = tuple[asyncio.Future[object], object, BaseException | None]

logger = logging.getLogger("sagakit.sqlite")

#: Commit at least this often under a sustained load, so latency stays bounded.
MAX_BATCH: Final = 256

MIGRATIONS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS sagakit_migrations (
    component TEXT NOT NULL,
    version   INTEGER NOT NULL,
    PRIMARY KEY (component, version)
)
"""


def path_from_url(url: str) -> str:
    """The file path of ``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise StoreError(f"not an SQLite URL: {url!r}")
    path = url[len(prefix) :]
    if not path:
        raise StoreError("the SQLite URL names no file")
    return path


def connect(path: str, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection with the settings every sagakit connection needs."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    # WAL: readers never block the writer, and a commit is one append and one fsync.
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: an acknowledged commit survives power loss, not only a process crash.
    conn.execute(f"PRAGMA synchronous={synchronous}")
    # Other processes (a `sagakit worker` beside `serve`) wait for the lock instead of failing.
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    # Temporary b-trees (sorting a saga listing) stay in memory.
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def split_statements(script: str) -> list[str]:
    """The complete SQL statements of ``script``, in order."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise StoreError(f"incomplete SQL statement in migration: {pending.strip()[:80]!r}")
    return statements


def apply_migrations(conn: sqlite3.Connection, component: str, package: str) -> int:
    """Apply the numbered ``NNNN_name.sql`` files of ``package`` not yet applied."""
    conn.execute(MIGRATIONS_TABLE)
    files = sorted(
        (f for f in resources.files(package).iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    applied = 0
    for file in files:
        version = int(file.name.split("_", 1)[0])
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute(
                "SELECT 1 FROM sagakit_migrations WHERE component = ? AND version = ?",
                (component, version),
            ).fetchone()
            if done is None:
                for statement in split_statements(file.read_text()):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO sagakit_migrations (component, version) VALUES (?, ?)",
                    (component, version),
                )
                applied += 1
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied


class SqliteDatabase:
    """One SQLite file, written by a group-committing thread and read by another."""

    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None
        self._reads: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self._closed = False

    def migrate(self, component: str, package: str) -> int:
        """Apply ``package``'s migrations (call before :meth:`start`, or from a thread)."""
        conn = connect(self.path, synchronous=self._synchronous)
        try:
            return apply_migrations(conn, component, package)
        finally:
            conn.close()

    def start(self) -> None:
        """Start both threads; call from the event loop that will use this database."""
        self._loop = asyncio.get_running_loop()
        conn = connect(self.path, synchronous=self._synchronous)
        self._writer = threading.Thread(
            target=self._write_forever, args=(conn,), name="sagakit-sqlite-write", daemon=True
        )
        self._writer.start()
        # A thread and a queue of its own rather than an executor: a read then costs one
        # queue put and one loop wake-up, without concurrent.futures' locks and callbacks.
        reader_conn = connect(self.path, synchronous=self._synchronous)
        self._reader = threading.Thread(
            target=self._read_forever, args=(reader_conn,), name="sagakit-sqlite-read", daemon=True
        )
        self._reader.start()

    async def write(self, work: Work[T]) -> T:
        """Run ``work`` in the next group-committed transaction; return once it is durable."""
        if self._closed or self._loop is None:
            raise StoreError("the database is closed")
        future: asyncio.Future[object] = self._loop.create_future()
        self._queue.put((work, future))
        return await future  # type: ignore[return-value]  # the future holds work's T

    async def read(self, work: Work[T]) -> T:
        """Run ``work`` on the reader connection (a consistent snapshot per call)."""
        if self._closed or self._loop is None:
            raise StoreError("the database is closed")
        future: asyncio.Future[object] = self._loop.create_future()
        self._reads.put((work, future))
        return await future  # type: ignore[return-value]  # the future holds work's T

    async def close(self) -> None:
        """Finish queued writes and reads, then stop both threads, one after the other.

        The writer's connection is closed first, the reader's once it is: SQLite removes
        the write-ahead log only when the last connection to the file closes, and two
        connections closing at once each still see the other's shared lock, so neither
        counts as the last and the ``-wal`` file stays behind.
        """
        if self._closed:
            return
        self._closed = True
        for jobs, thread in ((self._queue, self._writer), (self._reads, self._reader)):
            jobs.put(None)
            if thread is not None:
                await asyncio.to_thread(thread.join)

    # -- the reader thread ---------------------------------------------------------------

    def _read_forever(self, conn: sqlite3.Connection) -> None:
        _serve(self._reads, conn, self._answer)

    def _answer(self, conn: sqlite3.Connection, batch: list[Job]) -> None:
        outcomes = [_read_one(conn, work, future) for work, future in batch]
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_settle, outcomes)

    # -- the writer thread ---------------------------------------------------------------

    def _write_forever(self, conn: sqlite3.Connection) -> None:
        _serve(self._queue, conn, self._commit)

    def _commit(self, conn: sqlite3.Connection, batch: list[Job]) -> None:
        # The common case: every function succeeds, so run them back to back, without a
        # savepoint each, and commit once. If one raises, roll the batch back and run each
        # function again in a savepoint of its own, so that only the failing one is undone.
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes: list[Outcome]
            try:
                outcomes = [(future, work(conn), None) for work, future in batch]
            except Exception:  # isolated below
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                outcomes = [self._isolated(conn, work, future) for work, future in batch]
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = StoreError(f"SQLite commit failed: {exc}")
            outcomes = [(future, None, failure) for _, future in batch]
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_settle, outcomes)

    @staticmethod
    def _isolated(
        conn: sqlite3.Connection, work: Work[object], future: asyncio.Future[object]
    ) -> Outcome:
        conn.execute("SAVEPOINT work")
        try:
            value = work(conn)
        except Exception as exc:  # handed to the caller
            conn.execute("ROLLBACK TO work")
            conn.execute("RELEASE work")
            return (future, None, _wrap(exc))
        conn.execute("RELEASE work")
        return (future, value, None)


def _serve(
    jobs: queue.SimpleQueue[Job | None],
    conn: sqlite3.Connection,
    handle: Callable[[sqlite3.Connection, list[Job]], None],
) -> None:
    """A thread's loop: hand ``handle`` every job waiting (up to ``MAX_BATCH``) at once,
    until the ``None`` that :meth:`SqliteDatabase.close` queues; then close ``conn``."""
    try:
        while True:
            first = jobs.get()
            if first is None:
                return
            batch, stop = [first], False
            while len(batch) < MAX_BATCH:
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            handle(conn, batch)
            if stop:
                return
    finally:
        conn.close()


def _read_one(
    conn: sqlite3.Connection, work: Work[object], future: asyncio.Future[object]
) -> Outcome:
    try:
        return (future, work(conn), None)
    except sqlite3.Error as exc:
        return (future, None, StoreError(f"SQLite read failed: {exc}"))
    except Exception as exc:  # handed to the caller
        return (future, None, exc)


def _wrap(exc: Exception) -> BaseException:
    """Driver errors become ``StoreError``; the work's own errors pass through."""
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"SQLite error: {exc}")
    return exc


def _settle(outcomes: list[Outcome]) -> None:
    for future, value, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
