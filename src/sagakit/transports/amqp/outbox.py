"""``saga_outbox`` and ``saga_replies``, as the AMQP steps and the relay use them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Final

import orjson

from sagakit.errors import SagakitError, StoreError
from sagakit.records import JSONObject
from sagakit.store.base import SagaStore

#: A step waiting for its reply looks in ``saga_replies`` after this many seconds, then
#: after twice as long each time, up to ``REPLY_POLL_LAST``.
REPLY_POLL_FIRST: Final = 0.01
REPLY_POLL_LAST: Final = 0.5


class ReplyTimeout(SagakitError):
    """No reply came for a command in time: transient, the step retries with the same key."""


class Outbox:
    """``saga_outbox`` and ``saga_replies`` in the saga store's database (SQLite or PostgreSQL)."""

    def __init__(self, store: SagaStore) -> None:
        self.store = store
        self.kind = type(store).__name__
        if self.kind not in ("SqliteStore", "PostgresStore"):
            raise StoreError(f"the AMQP transport needs SQLite or PostgreSQL, not {self.kind}")
        #: Set when a step of this process recorded a command (wakes the relay at once;
        #: the commands other processes record are found by its next poll).
        self.added = asyncio.Event()
        self._waiters: dict[tuple[str, str], asyncio.Event] = {}

    async def unsent(
        self, limit: int = 100, *, owner: str | None = None, before: float = 0.0
    ) -> list[tuple[int, str, str, str, str, str]]:
        """Up to ``limit`` unsent commands, oldest first: (id, saga, step, key, kind, body).

        With ``owner``, only those of the sagas ``owner`` holds, and the others written
        before ``before``: each process's relay publishes its own sagas' commands at once,
        and another's only once they are late (that process is dead, or cut from RabbitMQ).
        """
        if self.kind == "SqliteStore":
            sql = (
                "SELECT id, saga_id, step, key, kind, body FROM saga_outbox"
                " WHERE sent_at IS NULL AND (? IS NULL OR created_at < ? OR saga_id IN"
                "  (SELECT saga_id FROM saga_instances WHERE owner = ?))"
                " ORDER BY id LIMIT ?"
            )
            args = (owner, before, owner, limit)
            rows = await self.store.db.read(  # type: ignore[attr-defined]
                lambda conn: conn.execute(sql, args).fetchall()
            )
        else:
            sql = (
                "SELECT id, saga_id, step, key, kind, body::text AS body FROM saga_outbox"
                " WHERE sent_at IS NULL AND ($2::text IS NULL OR created_at < $3 OR saga_id IN"
                "  (SELECT saga_id FROM saga_instances WHERE owner = $2))"
                " ORDER BY id LIMIT $1"
            )
            async with self.store.db.connection("outbox") as conn:  # type: ignore[attr-defined]
                rows = await conn.fetch(sql, limit, owner, before)
        return [(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5])) for r in rows]

    async def published(self, saga_id: str, step: str, kind: str) -> bool:
        """Whether the latest ``kind`` command of step ``step`` of ``saga_id`` (the one the
        attempt under way recorded) was published."""
        if self.kind == "SqliteStore":
            sql = (
                "SELECT sent_at IS NOT NULL FROM saga_outbox"
                " WHERE saga_id = ? AND step = ? AND kind = ? ORDER BY id DESC LIMIT 1"
            )
            row = await self.store.db.read(  # type: ignore[attr-defined]
                lambda conn: conn.execute(sql, (saga_id, step, kind)).fetchone()
            )
        else:
            sql = (
                "SELECT sent_at IS NOT NULL FROM saga_outbox"
                " WHERE saga_id = $1 AND step = $2 AND kind = $3 ORDER BY id DESC LIMIT 1"
            )
            async with self.store.db.connection("outbox") as conn:  # type: ignore[attr-defined]
                row = await conn.fetchrow(sql, saga_id, step, kind)
        return row is not None and bool(row[0])

    async def mark_sent(self, ids: list[int]) -> None:
        """Record that RabbitMQ confirmed the commands ``ids``."""
        at = time.time()
        if self.kind == "SqliteStore":
            params = [(at, i) for i in ids]
            sql = "UPDATE saga_outbox SET sent_at = ? WHERE id = ?"
            await self.store.db.write(lambda conn: conn.executemany(sql, params))  # type: ignore[attr-defined]
        else:
            sql = "UPDATE saga_outbox SET sent_at = $1 WHERE id = ANY($2::bigint[])"
            async with self.store.db.connection("outbox") as conn:  # type: ignore[attr-defined]
                await conn.execute(sql, at, ids)

    async def prune(self, before: float) -> tuple[int, int]:
        """Delete the commands sent before ``before``, and the replies stored before it
        whose saga is no longer active (running, compensating, or failed: an operator's
        retry may still wait for one); how many of each."""
        active = "SELECT saga_id FROM saga_instances WHERE status IN"
        active += " ('running', 'compensating', 'failed')"
        if self.kind == "SqliteStore":

            def work(conn: Any) -> tuple[int, int]:
                sent = conn.execute("DELETE FROM saga_outbox WHERE sent_at < ?", (before,))
                replies = conn.execute(
                    f"DELETE FROM saga_replies WHERE at < ? AND saga_id NOT IN ({active})",
                    (before,),
                )
                return int(sent.rowcount), int(replies.rowcount)

            counts: tuple[int, int] = await self.store.db.write(work)  # type: ignore[attr-defined]
            return counts
        async with self.store.db.connection("outbox") as conn:  # type: ignore[attr-defined]
            sent = await conn.execute("DELETE FROM saga_outbox WHERE sent_at < $1", before)
            replies = await conn.execute(
                f"DELETE FROM saga_replies WHERE at < $1 AND saga_id NOT IN ({active})", before
            )
        return int(sent.rpartition(" ")[2]), int(replies.rpartition(" ")[2])

    async def add_reply(self, saga_id: str, name: str, payload: JSONObject) -> bool:
        """Store a reply once; whether it was new. Wakes a step waiting for it here."""
        data, at = orjson.dumps(payload).decode(), time.time()
        if self.kind == "SqliteStore":
            sql = "INSERT OR IGNORE INTO saga_replies (saga_id, name, payload, at) VALUES (?,?,?,?)"
            new = await self.store.db.write(  # type: ignore[attr-defined]
                lambda conn: conn.execute(sql, (saga_id, name, data, at)).rowcount
            )
        else:
            sql = (
                "INSERT INTO saga_replies (saga_id, name, payload, at)"
                " VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT DO NOTHING"
            )
            async with self.store.db.connection("replies") as conn:  # type: ignore[attr-defined]
                status = await conn.execute(sql, saga_id, name, data, at)
            new = status.endswith(" 1")
        waiter = self._waiters.get((saga_id, name))
        if waiter is not None:
            waiter.set()
        return bool(new)

    async def reply(self, saga_id: str, name: str) -> JSONObject | None:
        """The stored reply ``name`` of ``saga_id``, if it came."""
        if self.kind == "SqliteStore":
            sql = "SELECT payload FROM saga_replies WHERE saga_id = ? AND name = ?"
            row = await self.store.db.read(  # type: ignore[attr-defined]
                lambda conn: conn.execute(sql, (saga_id, name)).fetchone()
            )
        else:
            sql = "SELECT payload::text FROM saga_replies WHERE saga_id = $1 AND name = $2"
            async with self.store.db.connection("replies") as conn:  # type: ignore[attr-defined]
                row = await conn.fetchrow(sql, saga_id, name)
        if row is None:
            return None
        payload: JSONObject = orjson.loads(row[0])
        return payload

    async def wait_reply(self, saga_id: str, name: str, timeout: float) -> JSONObject:
        """The reply ``name``, waiting up to ``timeout`` seconds; ``ReplyTimeout`` after."""
        deadline = time.monotonic() + timeout
        waiter = self._waiters.setdefault((saga_id, name), asyncio.Event())
        pause = REPLY_POLL_FIRST
        try:
            while True:
                waiter.clear()
                if (found := await self.reply(saga_id, name)) is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ReplyTimeout(f"no reply {name!r} for saga {saga_id} in {timeout}s")
                # Woken at once by the reply consumer of this process. A reply that another
                # process's consumer stored (several checkout processes share the replies
                # queue) is found by polling: soon at first, when replies come, then rarely.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, pause)):
                        await waiter.wait()
                pause = min(pause * 2, REPLY_POLL_LAST)
        finally:
            self._waiters.pop((saga_id, name), None)
