"""Count PostgreSQL round trips and transactions per checkout: ``python -m bench.roundtrips``.

Serves ``sagakit serve`` on a fresh PostgreSQL database (loaded as the suite loads it)
through a small TCP proxy that reads the client's side of PostgreSQL's wire protocol, and
checks out ``--checkouts`` orders one after another. A round trip is a message after which
the client waits for the server: a ``Sync`` (the end of an extended-protocol exchange:
parse, bind, execute) or a simple ``Query``. The counts of an idle window as long as the
load (the server's background work: lease renewal, recovery polling) are subtracted.
Transactions are PostgreSQL's own count (``pg_stat_database.xact_commit``) over the same
windows, and so is the CPU time of the server's process group and of the PostgreSQL
backends serving this database (their ``/proc`` clocks, not other databases' backends),
one checkout at a time: no wait for a lock or a core is in it. Simple queries are listed by
text, so a ``BEGIN``/``COMMIT`` or the pool's reset query shows by name; a ``Parse`` is a
statement prepared anew (not from asyncpg's cache).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import re
import struct
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench import data, machine, servers

#: The startup packets' protocol codes: SSLRequest, GSSENCRequest, CancelRequest.
NO_TYPE_BYTE = {80877103, 80877104, 80877102}
#: asyncpg's savepoint names, numbered: counted as one.
SAVEPOINT = re.compile(r"__asyncpg_savepoint_\w+__")
#: A dollar-quoted literal (``$tag$...$tag$``): counted as one, whatever it holds.
DOLLAR_QUOTED = re.compile(r"(\$\w*\$).*?\1", re.DOTALL)


@dataclass(slots=True)
class Counts:
    """What the proxy saw the clients send."""

    syncs: int = 0
    parses: int = 0
    queries: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def round_trips(self) -> int:
        """Syncs plus simple queries: each one waits for the server's answer."""
        return self.syncs + sum(self.queries.values())

    def copy(self) -> Counts:
        """A snapshot."""
        return Counts(self.syncs, self.parses, collections.Counter(self.queries))


class Proxy:
    """A TCP proxy to PostgreSQL that counts the client's round trips, in its own thread."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.counts = Counts()
        self.port = servers.free_port()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def snapshot(self) -> Counts:
        """The counts so far."""
        with self._lock:
            return self.counts.copy()

    def __enter__(self) -> Proxy:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port)
        )
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        back = asyncio.ensure_future(_pipe(up_reader, writer))
        try:
            await self._frontend(reader, up_writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            up_writer.close()
            await asyncio.gather(back, return_exceptions=True)
            writer.close()

    async def _frontend(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        # Untyped packets (SSL request, startup) until the startup message; then typed ones.
        while True:
            head = await reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
            up.write(head + await reader.readexactly(length - 8))
            await up.drain()
            if code not in NO_TYPE_BYTE:
                break
        while True:
            head = await reader.readexactly(5)
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            body = await reader.readexactly(length - 4)
            with self._lock:
                if kind == b"S":
                    self.counts.syncs += 1
                elif kind == b"P":
                    self.counts.parses += 1
                elif kind == b"Q":
                    text = " ".join(body.rstrip(b"\0").decode(errors="replace").split())
                    text = SAVEPOINT.sub("<savepoint>", text)
                    text = DOLLAR_QUOTED.sub("<literal>", text)
                    self.counts.queries[
                        text[:60] if len(text) <= 60 else text[:45] + "..." + text[-12:]
                    ] += 1
            up.write(head + body)
            await up.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    writer.close()


async def _commits(url: str) -> tuple[int, list[int]]:
    """The database's committed transactions, and the pids of the backends serving it."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await asyncio.sleep(1.2)  # the backends' statistics are flushed about once a second
        value = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(value), [r["pid"] for r in pids]
    finally:
        await conn.close()


def _backends_cpu(pids: list[int]) -> dict[int, float]:
    """Each backend's CPU seconds so far."""
    return {pid: machine.cpu_seconds(pid=pid) for pid in pids}


def _checkout(url: str, n: int) -> None:
    request = urllib.request.Request(f"{url}/checkout/o{n}", method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
    except urllib.error.HTTPError as refused:  # the 400 of every tenth order
        refused.read()


@dataclass(frozen=True, slots=True)
class Window:
    """Round trips, commits and CPU seconds over one window."""

    counts: Counts
    commits: int
    seconds: float
    server_cpu: float
    postgres_cpu: float


def _window(proxy: Proxy, url: str, server: int, action: Callable[[], None]) -> Window:
    before, (commits, pids) = proxy.snapshot(), asyncio.run(_commits(url))
    backends, server_cpu = _backends_cpu(pids), machine.cpu_seconds(group=server)
    start = time.monotonic()
    action()
    seconds = time.monotonic() - start
    server_cpu = machine.cpu_seconds(group=server) - server_cpu
    # A backend that was not there at the start counts from nothing.
    postgres_cpu = sum(cpu - backends.get(pid, 0.0) for pid, cpu in _backends_cpu(pids).items())
    after, (commits_after, pids_after) = proxy.snapshot(), asyncio.run(_commits(url))
    postgres_cpu += sum(c for p, c in _backends_cpu(pids_after).items() if p not in backends)
    delta = Counts(
        after.syncs - before.syncs, after.parses - before.parses, after.queries - before.queries
    )
    # Each _commits call is itself one committed transaction (on another connection).
    return Window(delta, commits_after - commits - 1, seconds, server_cpu, postgres_cpu)


@contextlib.contextmanager
def _served(admin_url: str, checkouts: int) -> Iterator[tuple[str, Proxy, str, int]]:
    with data.fresh_postgres(admin_url, "roundtrips") as url, tempfile.TemporaryDirectory() as d:
        parts = urlsplit(url)
        port = servers.free_port()
        log = Path(d) / "server.log"
        with servers.serving(servers.sagakit_command(port, url, 1), port, log):
            pass  # migrates
        asyncio.run(data.load_postgres(url, checkouts))
        with Proxy((parts.hostname or "127.0.0.1", parts.port or 5432)) as proxy:
            # Without TLS, so that the proxy can read the messages.
            netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
            proxied = urlunsplit(parts._replace(netloc=netloc, query="sslmode=disable"))
            command = servers.sagakit_command(port, proxied, 1)
            with servers.serving(command, port, log) as server:
                # The server runs in a session of its own: its process group is its pid.
                yield server.url, proxy, url, server.process.pid


def measure(admin_url: str, checkouts: int) -> dict[str, object]:
    """Round trips and transactions per checkout, net of an idle window as long."""
    with _served(admin_url, checkouts) as (http_url, proxy, url, server):
        _checkout(http_url, 0)  # warm: statements prepared, pool filled

        def checkouts_one_by_one() -> None:
            for n in range(1, checkouts):
                _checkout(http_url, n)

        load = _window(proxy, url, server, checkouts_one_by_one)
        idle = _window(proxy, url, server, lambda: time.sleep(load.seconds))
    done = checkouts - 1
    queries = load.counts.queries - idle.counts.queries
    return {
        "checkouts": done,
        "round_trips": (load.counts.round_trips - idle.counts.round_trips) / done,
        "syncs": (load.counts.syncs - idle.counts.syncs) / done,
        "parses": (load.counts.parses - idle.counts.parses) / done,
        "simple_queries": {text: n / done for text, n in queries.most_common()},
        "transactions": (load.commits - idle.commits) / done,
        "server_cpu_us": (load.server_cpu - idle.server_cpu) * 1e6 / done,
        "postgres_cpu_us": (load.postgres_cpu - idle.postgres_cpu) * 1e6 / done,
    }


def main() -> None:
    """Print the round trips and transactions per checkout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkouts", type=int, default=201)
    parser.add_argument("--postgres-url", default=data.DEFAULT_POSTGRES)
    args = parser.parse_args()
    found = measure(args.postgres_url, args.checkouts)
    print(f"{found['checkouts']} checkouts, one at a time, net of an idle window as long:")
    print(f"  round trips per checkout:  {found['round_trips']:.2f}")
    print(f"    extended (Sync):         {found['syncs']:.2f}")
    print(f"    statements parsed:       {found['parses']:.2f} (not from the statement cache)")
    for text, n in found["simple_queries"].items():  # type: ignore[attr-defined]
        print(f"    simple {text!r}: {n:.2f}")
    print(f"  transactions per checkout: {found['transactions']:.2f}")
    print(f"  CPU per checkout: server {found['server_cpu_us']:.0f} µs,", end=" ")
    print(f"its PostgreSQL backends {found['postgres_cpu_us']:.0f} µs (one at a time)")


if __name__ == "__main__":
    main()
