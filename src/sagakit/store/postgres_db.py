"""A PostgreSQL pool (asyncpg), its migrations, and where driver errors are wrapped."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from sagakit.errors import StoreError

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise StoreError(
        "PostgreSQL needs the asyncpg driver: pip install 'sagakit[postgres]'"
    ) from exc

Connection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
Record: TypeAlias = asyncpg.Record
#: The driver's errors that the stores tell apart (imported from here, so that a missing
#: driver is always reported as the extra to install).
PostgresError: TypeAlias = asyncpg.PostgresError
UniqueViolationError: TypeAlias = asyncpg.UniqueViolationError

#: Session settings of every connection. A healthy sagakit process never sits idle inside
#: a transaction; one that does is stalled (SIGSTOP, a frozen VM) and may hold row locks
#: that the process taking its sagas over needs: PostgreSQL ends such a session. A URL
#: parameter (``?idle_in_transaction_session_timeout=...``) overrides it.
SERVER_SETTINGS: Final = {"idle_in_transaction_session_timeout": "10s"}
#: Seconds to wait for a pooled connection before giving up with ``StoreError``.
ACQUIRE_TIMEOUT: Final = 30.0
#: While the server refuses to open another connection (``too many clients``: its
#: ``max_connections`` is shared with other clients), a use of a pool that holds some waits
#: for one of them, trying again after this many seconds, then twice as long, up to
#: ``REFUSED_PAUSE_LAST``.
REFUSED_PAUSE_FIRST: Final = 0.01
REFUSED_PAUSE_LAST: Final = 0.5
#: Errors of the driver and the network, turned into StoreError at this boundary: the
#: server's (``PostgresError``), the client's misuse or closed connections
#: (``InterfaceError``), its internal state errors (``InternalClientError``, raised when a
#: connection is terminated mid-query), and the network's.
DRIVER_ERRORS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

MIGRATIONS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS sagakit_migrations (
    component text NOT NULL,
    version   integer NOT NULL,
    PRIMARY KEY (component, version)
)
"""
#: Serialises migrations across processes starting at once (any fixed key works).
MIGRATION_LOCK: Final = "SELECT pg_advisory_xact_lock(7283515410)"


if TYPE_CHECKING:
    _Connection: TypeAlias = asyncpg.Connection[asyncpg.Record]
else:
    _Connection = asyncpg.Connection


class SagakitConnection(_Connection):
    """A pooled connection that remembers the statements sagakit prepared on it by name.

    A statement prepared with SQL ``PREPARE`` can be run by a simple query (``EXECUTE``),
    several statements of which travel in one message: that is how a unit's last statement
    and its ``COMMIT`` cost one round trip. It lives as long as the session does.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The names of the statements prepared on this session.
        self.sagakit_prepared: set[str] = set()


def prepared_names(conn: Connection) -> set[str]:
    """The names of the statements prepared on ``conn``'s session (see
    :class:`SagakitConnection`); add a name once its ``PREPARE`` has succeeded."""
    # The pool's proxy forwards attributes it lacks to the SagakitConnection it wraps, or
    # to nothing once the connection is lost (a driver error, like any call would raise).
    try:
        names: set[str] = getattr(conn, "sagakit_prepared")  # noqa: B009 - not on its type
    except AttributeError:
        raise asyncpg.InterfaceError("the connection was lost") from None
    return names


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """What a released connection needs beyond asyncpg's own rollback: nothing.

    asyncpg rolls back a transaction left open and forgets the listeners before it calls
    this; its default reset would then send one more query on every release (advisory
    unlocks, ``CLOSE ALL``, ``UNLISTEN *``, ``RESET ALL``), a round trip per pooled use.
    sagakit leaves no session state behind: its locks are transaction-scoped, it opens no
    cursor outside a transaction, the one listening connection is never given back before
    :meth:`PostgresDatabase.close` unlistens it, and nothing sets a session variable (the
    statements it prepares by name stay on purpose: see :class:`SagakitConnection`). A local
    action (:class:`~sagakit.store.postgres.PostgresAction`) must keep it so: ``SET LOCAL``,
    not ``SET``.
    """


@contextlib.contextmanager
def wrapped_errors(action: str) -> Iterator[None]:
    """Turn driver errors raised inside the block into ``StoreError``."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise StoreError(f"PostgreSQL {action} failed: {exc}") from exc


class PostgresDatabase:
    """A pool of asyncpg connections to one database."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self.pool = pool
        self._listeners: list[tuple[Connection, str, Callable[..., None]]] = []

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 2, max_size: int = 20) -> PostgresDatabase:
        """A pool for ``url`` (``postgresql://user@host:port/dbname``)."""
        with wrapped_errors("connect"):
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                server_settings={k: v for k, v in SERVER_SETTINGS.items() if k not in url},
                reset=_keep_session,
                connection_class=SagakitConnection,
            )
        return cls(pool)

    @contextlib.asynccontextmanager
    async def connection(self, action: str = "query") -> AsyncIterator[Connection]:
        """A pooled connection; driver errors inside become ``StoreError``."""
        with wrapped_errors(action):
            conn = await self._acquire()
            try:
                yield conn
            finally:
                await self.pool.release(conn)

    async def _acquire(self) -> Connection:
        """A pooled connection, within ``ACQUIRE_TIMEOUT`` (bounded: a pool that stays
        exhausted becomes an error, not a silent hang). A server refusing a new connection
        is waited out while the pool holds others; a pool holding none fails at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACQUIRE_TIMEOUT
        pause = REFUSED_PAUSE_FIRST
        while True:
            try:
                return await self.pool.acquire(timeout=max(0.0, deadline - loop.time()))
            except asyncpg.TooManyConnectionsError:
                if self.pool.get_size() == 0 or loop.time() + pause > deadline:
                    raise
            await asyncio.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, REFUSED_PAUSE_LAST)

    @contextlib.asynccontextmanager
    async def transaction(self, action: str = "transaction") -> AsyncIterator[Connection]:
        """A pooled connection inside a transaction, committed when the block ends."""
        async with self.connection(action) as conn, conn.transaction():
            yield conn

    async def migrate(self, component: str, package: str) -> int:
        """Apply ``package``'s numbered ``.sql`` files not yet applied, under a lock."""
        files = sorted(
            (f for f in resources.files(package).iterdir() if f.name.endswith(".sql")),
            key=lambda f: f.name,
        )
        applied = 0
        async with self.transaction("migration") as conn:
            await conn.execute(MIGRATION_LOCK)
            await conn.execute(MIGRATIONS_TABLE)
            done = {
                r["version"]
                for r in await conn.fetch(
                    "SELECT version FROM sagakit_migrations WHERE component = $1", component
                )
            }
            for file in files:
                version = int(file.name.split("_", 1)[0])
                if version in done:
                    continue
                await conn.execute(file.read_text())
                await conn.execute(
                    "INSERT INTO sagakit_migrations (component, version) VALUES ($1, $2)",
                    component,
                    version,
                )
                applied += 1
        return applied

    async def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` on every ``NOTIFY`` of ``channel``, until :meth:`close`.

        The listening connection is taken from the pool and kept: a notification is only
        delivered to the session that listens.
        """
        with wrapped_errors("listen"):
            conn = await self.pool.acquire(timeout=ACQUIRE_TIMEOUT)

            def notified(*_: object) -> None:
                callback()

            try:
                await conn.add_listener(channel, notified)
            except BaseException:
                # Cancelled (a worker stopped as it started) or failed: give the connection
                # back, or closing the pool would wait for it for ever.
                await asyncio.shield(self.pool.release(conn))
                raise
        self._listeners.append((conn, channel, notified))

    async def close(self) -> None:
        """Close every connection of the pool."""
        for conn, channel, notified in self._listeners:
            # A listening connection the server terminated is gone already: nothing to undo.
            with contextlib.suppress(*DRIVER_ERRORS):
                await conn.remove_listener(channel, notified)
                await self.pool.release(conn)
        self._listeners.clear()
        with wrapped_errors("close"):
            await self.pool.close()
