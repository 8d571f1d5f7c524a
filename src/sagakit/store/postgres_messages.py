"""The outbox and the replies of :class:`~sagakit.store.postgres.PostgresStore`, in SQL."""

from __future__ import annotations

import time
from typing import Final

import orjson

from sagakit.records import JSONObject
from sagakit.store.base import OutboxRow
from sagakit.store.postgres_db import PostgresDatabase

UNSENT: Final = (
    "SELECT id, saga_id, step, key, kind, body::text AS body FROM saga_outbox"
    " WHERE sent_at IS NULL AND ($2::text IS NULL OR created_at < $3 OR saga_id IN"
    "  (SELECT saga_id FROM saga_instances WHERE owner = $2))"
    " ORDER BY id LIMIT $1"
)
PUBLISHED: Final = (
    "SELECT sent_at IS NOT NULL FROM saga_outbox"
    " WHERE saga_id = $1 AND step = $2 AND kind = $3 ORDER BY id DESC LIMIT 1"
)
MARK_SENT: Final = "UPDATE saga_outbox SET sent_at = $1 WHERE id = ANY($2::bigint[])"
ADD_REPLY: Final = (
    "INSERT INTO saga_replies (saga_id, name, payload, at)"
    " VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT DO NOTHING"
)
REPLY: Final = "SELECT payload::text FROM saga_replies WHERE saga_id = $1 AND name = $2"
PRUNE_SENT: Final = "DELETE FROM saga_outbox WHERE sent_at < $1"
PRUNE_REPLIES: Final = (
    "DELETE FROM saga_replies WHERE at < $1 AND saga_id NOT IN (SELECT saga_id"
    " FROM saga_instances WHERE status IN ('running', 'compensating', 'failed'))"
)


class PostgresMessages:
    """The :class:`~sagakit.store.base.MessageStore` methods over ``saga_outbox`` and
    ``saga_replies`` (created by the store's migrations)."""

    db: PostgresDatabase

    async def outbox_unsent(
        self, limit: int = 100, *, owner: str | None = None, before: float = 0.0
    ) -> list[OutboxRow]:
        async with self.db.connection("outbox") as conn:
            rows = await conn.fetch(UNSENT, limit, owner, before)
        return [
            OutboxRow(
                id=r["id"],
                saga_id=r["saga_id"],
                step=r["step"],
                key=r["key"],
                kind=r["kind"],
                body=r["body"],
            )
            for r in rows
        ]

    async def outbox_published(self, saga_id: str, step: str, kind: str) -> bool:
        async with self.db.connection("outbox") as conn:
            row = await conn.fetchrow(PUBLISHED, saga_id, step, kind)
        return row is not None and bool(row[0])

    async def outbox_mark_sent(self, ids: list[int]) -> None:
        async with self.db.connection("outbox") as conn:
            await conn.execute(MARK_SENT, time.time(), ids)

    async def add_reply(self, saga_id: str, name: str, payload: JSONObject) -> bool:
        data = orjson.dumps(payload).decode()
        async with self.db.connection("replies") as conn:
            status = await conn.execute(ADD_REPLY, saga_id, name, data, time.time())
        return status.endswith(" 1")

    async def reply(self, saga_id: str, name: str) -> JSONObject | None:
        async with self.db.connection("replies") as conn:
            row = await conn.fetchrow(REPLY, saga_id, name)
        if row is None:
            return None
        payload: JSONObject = orjson.loads(row[0])
        return payload

    async def prune_messages(self, before: float) -> tuple[int, int]:
        async with self.db.connection("outbox") as conn:
            sent = await conn.execute(PRUNE_SENT, before)
            replies = await conn.execute(PRUNE_REPLIES, before)
        return int(sent.rpartition(" ")[2]), int(replies.rpartition(" ")[2])
