"""The checkout with its participants over RabbitMQ (``SAGAKIT_PARTICIPANTS=amqp``).

The three ``sagakit participant KIND --transport amqp`` processes and ``sagakit serve`` run
as real processes against the RabbitMQ server at 127.0.0.1:5672; each test uses queues of
its own (``SAGAKIT_AMQP_PREFIX``), deleted at teardown. Tests skip when RabbitMQ does not
answer. The checkout keeps its sagas in a SQLite file (``amqp``) or in a PostgreSQL database
of the test's own, created for it and dropped after it (``amqp_postgres``); the participants
keep theirs in SQLite files either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import socket
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import aio_pika
import asyncpg
import pytest

from sagakit.api.participants import KINDS, Kind
from sagakit.transports.amqp.broker import queue_names
from tests.conftest import _admin, database_url
from tests.distributed.conftest import Distributed
from tests.processes import PATIENT, ServeProcess, free_port

T = TypeVar("T")
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def rabbitmq_answers() -> bool:
    """Whether something listens on RabbitMQ's port."""
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", 5672)) == 0


class Proxy:
    """A TCP proxy to RabbitMQ whose connections a test cuts, as a broker restart would.

    A test may also hold back what RabbitMQ sends (``pause``: deliveries and confirms stay
    in the proxy while the client still publishes) and refuse new connections for a while
    (``refusing``), so that messages RabbitMQ handed to a client go back to their queue.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        #: Cleared while paused: nothing flows from RabbitMQ to the clients.
        self.flowing = asyncio.Event()
        self.flowing.set()
        #: While true, a new connection is closed at once.
        self.refusing = False

    async def start(self) -> None:
        """Listen on ``self.port``."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5672)
        self.writers |= {writer, up_writer}

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, gate: asyncio.Event | None
        ) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    if gate is not None:
                        await gate.wait()
                    if sink.transport.is_closing():
                        break
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer, None), pipe(up_reader, writer, self.flowing))

    def pause(self) -> None:
        """Hold back everything RabbitMQ sends to the clients (they still send to it)."""
        self.flowing.clear()

    def resume(self) -> None:
        """Let what RabbitMQ sends flow again."""
        self.flowing.set()

    def cut(self) -> int:
        """Close every connection through the proxy; how many there were."""
        writers, self.writers = self.writers, set()
        for writer in writers:
            writer.transport.abort()
        return len(writers) // 2

    async def close(self) -> None:
        """Stop listening and cut every connection."""
        self.resume()
        self.cut()
        if self.server is not None:
            self.server.close()


class AmqpDistributed(Distributed):
    """The distributed checkout with the AMQP transport and queues of its own."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.prefix = f"sagakit-test-{uuid.uuid4().hex[:12]}"
        #: Where the processes find RabbitMQ (a test may put a ``Proxy`` in between).
        self.amqp_url = AMQP_URL

    def amqp_env(self) -> dict[str, str]:
        """The AMQP settings every process of this test shares."""
        return {
            "SAGAKIT_AMQP_URL": self.amqp_url,
            "SAGAKIT_AMQP_PREFIX": self.prefix,
            "SAGAKIT_AMQP_REPLY_SECONDS": "3",
        }

    async def participant(
        self, kind: Kind, *, env: Mapping[str, str] | None = None
    ) -> ServeProcess:
        """Start (or restart, on its port) the ``kind`` participant; return once it consumes.

        It takes its commands from RabbitMQ and serves its HTTP API (users, items) on its
        port, where the checkout service reads and creates them.
        """
        if env is not None:
            self.participant_env[kind] = dict(env)
        args = ["participant", kind, "--transport", "amqp", "--port", str(self.ports[kind])]
        args += ["--database-url", f"sqlite:///{self.participant_db(kind)}"]
        env = {**self.amqp_env(), **self.participant_env[kind]}
        ready = f"{kind} participant consuming"
        process = await self.launch_server(self.ports[kind], args, env, ready=ready)
        self.participants[kind] = process
        return process

    def http_env(self) -> dict[str, str]:
        """The checkout service's settings: AMQP participants, their APIs for the catalog."""
        return {
            **super().http_env(),
            "SAGAKIT_PARTICIPANTS": "amqp",
            **self.amqp_env(),
            **PATIENT,
        }

    async def serve(
        self, *, crash_at: str | None = None, env: Mapping[str, str] | None = None
    ) -> ServeProcess:
        """Start ``sagakit serve`` in AMQP mode on the checkout's database."""
        return await super().serve(crash_at=crash_at, env=env)

    async def delete_queues(self) -> None:
        """Delete this test's queues and exchange."""
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            names = queue_names(self.prefix, KINDS)
            for name in ("payment", "inventory", "shipping", "replies", "dead"):
                await channel.queue_delete(names[name])
            await channel.exchange_delete(names["dlx"])


@pytest.fixture
async def amqp(tmp_path: Path) -> AsyncIterator[AmqpDistributed]:
    """A launcher of the AMQP checkout on fresh databases and queues; kills it all after."""
    if not rabbitmq_answers():
        pytest.skip("RabbitMQ does not answer on 127.0.0.1:5672")
    launcher = AmqpDistributed(tmp_path)
    try:
        yield launcher
    finally:
        launcher.close()
        await launcher.delete_queues()


def dollar_placeholders(sql: str) -> str:
    """``sql`` with SQLite's ``?`` placeholders numbered as PostgreSQL's ``$1``, ``$2``..."""
    numbers = itertools.count(1)
    return re.sub(r"\?", lambda _: f"${next(numbers)}", sql)


class PostgresReader:
    """Blocking reads of a PostgreSQL database, for the launchers' synchronous readers.

    The test's loop is busy running the test, so the test's connection lives on a loop of
    its own in a thread, and each read blocks until that loop answers (as the SQLite reads
    of ``Sagakit`` block). The connection is opened on the first read.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None

    def _run(self, coro: Coroutine[object, object, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30.0)

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple[object, ...]]:
        if self._conn is None:
            self._conn = await asyncpg.connect(self.url)
        return [tuple(row) for row in await self._conn.fetch(sql, *params)]

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        """Every row of a query written with ``?`` placeholders."""
        return self._run(self._fetch(dollar_placeholders(sql), params))

    def close(self) -> None:
        """Close the connection and stop the thread's loop."""
        if self._conn is not None:
            self._run(self._conn.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class AmqpOnPostgres(AmqpDistributed):
    """The AMQP checkout with its saga store, orders and catalog copy on PostgreSQL.

    ``serve`` gets ``database_url`` (it applies the migrations itself); the readers of the
    checkout's database (``rows``, ``scalar`` and those built on them) read PostgreSQL.
    """

    def __init__(self, tmp: Path, database_url: str) -> None:
        super().__init__(tmp)
        self.database_url = database_url
        self.reader = PostgresReader(database_url)

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        """Every row of a query on the checkout's PostgreSQL database (``?`` placeholders)."""
        return self.reader.rows(sql, params)

    def scalar(self, sql: str, params: Sequence[object] = ()) -> object:
        """The first column of the first row of a query on the checkout's database."""
        rows = self.rows(sql, params)
        assert rows, sql
        return rows[0][0]

    def connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """Not here: the checkout's database is not a SQLite file."""
        raise NotImplementedError("the checkout's database is PostgreSQL: use rows()")

    def close(self) -> None:
        """Kill and reap every process started, then close the test's connection."""
        try:
            super().close()
        finally:
            self.reader.close()


@pytest.fixture
async def amqp_postgres(tmp_path: Path) -> AsyncIterator[AmqpOnPostgres]:
    """The AMQP launcher, the checkout on a new PostgreSQL database, dropped at teardown."""
    if not rabbitmq_answers():
        pytest.skip("RabbitMQ does not answer on 127.0.0.1:5672")
    name = f"sagakit_amqp_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        launcher = AmqpOnPostgres(tmp_path, database_url(name))
        try:
            yield launcher
        finally:
            launcher.close()
            await launcher.delete_queues()
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
