"""The outbox and the replies of :class:`~sagakit.store.sqlite.SqliteStore`, in SQL."""

from __future__ import annotations

import sqlite3
import time
from typing import Final

import orjson

from sagakit.records import JSONObject
from sagakit.store.base import OutboxRow
from sagakit.store.sqlite_db import SqliteDatabase

UNSENT: Final = (
    "SELECT id, saga_id, step, key, kind, body FROM saga_outbox"
    " WHERE sent_at IS NULL AND (? IS NULL OR created_at < ? OR saga_id IN"
    "  (SELECT saga_id FROM saga_instances WHERE owner = ?))"
    " ORDER BY id LIMIT ?"
)
PUBLISHED: Final = (
    "SELECT sent_at IS NOT NULL FROM saga_outbox"
    " WHERE saga_id = ? AND step = ? AND kind = ? ORDER BY id DESC LIMIT 1"
)
MARK_SENT: Final = "UPDATE saga_outbox SET sent_at = ? WHERE id = ?"
ADD_REPLY: Final = (
    "INSERT OR IGNORE INTO saga_replies (saga_id, name, payload, at) VALUES (?, ?, ?, ?)"
)
REPLY: Final = "SELECT payload FROM saga_replies WHERE saga_id = ? AND name = ?"
PRUNE_SENT: Final = "DELETE FROM saga_outbox WHERE sent_at < ?"
PRUNE_REPLIES: Final = (
    "DELETE FROM saga_replies WHERE at < ? AND saga_id NOT IN (SELECT saga_id"
    " FROM saga_instances WHERE status IN ('running', 'compensating', 'failed'))"
)


class SqliteMessages:
    """The :class:`~sagakit.store.base.MessageStore` methods over ``saga_outbox`` and
    ``saga_replies`` (created by the store's migrations)."""

    db: SqliteDatabase

    async def outbox_unsent(
        self, limit: int = 100, *, owner: str | None = None, before: float = 0.0
    ) -> list[OutboxRow]:
        args = (owner, before, owner, limit)
        rows = await self.db.read(lambda conn: conn.execute(UNSENT, args).fetchall())
        return [
            OutboxRow(id=r[0], saga_id=r[1], step=r[2], key=r[3], kind=r[4], body=r[5])
            for r in rows
        ]

    async def outbox_published(self, saga_id: str, step: str, kind: str) -> bool:
        args = (saga_id, step, kind)
        row = await self.db.read(lambda conn: conn.execute(PUBLISHED, args).fetchone())
        return row is not None and bool(row[0])

    async def outbox_mark_sent(self, ids: list[int]) -> None:
        at = time.time()
        params = [(at, i) for i in ids]
        await self.db.write(lambda conn: conn.executemany(MARK_SENT, params).rowcount)

    async def add_reply(self, saga_id: str, name: str, payload: JSONObject) -> bool:
        args = (saga_id, name, orjson.dumps(payload).decode(), time.time())
        new: int = await self.db.write(lambda conn: conn.execute(ADD_REPLY, args).rowcount)
        return new == 1

    async def reply(self, saga_id: str, name: str) -> JSONObject | None:
        row = await self.db.read(lambda conn: conn.execute(REPLY, (saga_id, name)).fetchone())
        if row is None:
            return None
        payload: JSONObject = orjson.loads(row[0])
        return payload

    async def prune_messages(self, before: float) -> tuple[int, int]:
        def work(conn: sqlite3.Connection) -> tuple[int, int]:
            sent = conn.execute(PRUNE_SENT, (before,)).rowcount
            return sent, conn.execute(PRUNE_REPLIES, (before,)).rowcount

        return await self.db.write(work)
