"""The outbox and the replies as the AMQP steps and the relay use them: wake-ups and waits.

What is stored, and how, is the saga store's (:class:`~sagakit.store.base.MessageStore`);
this module adds what one process does over it: the relay is woken when a step of this
process recorded a command, and a step waits for its reply (woken by this process's reply
consumer, or finding by polling a reply another process's consumer stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

from sagakit.errors import SagakitError
from sagakit.records import JSONObject
from sagakit.store.base import MessageStore, OutboxRow

#: A step waiting for its reply looks in ``saga_replies`` after this many seconds, then
#: after twice as long each time, up to ``REPLY_POLL_LAST``.
REPLY_POLL_FIRST: Final = 0.01
REPLY_POLL_LAST: Final = 0.5


class ReplyTimeout(SagakitError):
    """No reply came for a command in time: transient, the step retries with the same key."""


class Outbox:
    """The store's outbox and replies, with this process's wake-ups."""

    def __init__(self, store: MessageStore) -> None:
        self.store = store
        #: Set when a step of this process recorded a command (wakes the relay at once;
        #: the commands other processes record are found by its next poll).
        self.added = asyncio.Event()
        self._waiters: dict[tuple[str, str], asyncio.Event] = {}

    async def unsent(
        self, limit: int = 100, *, owner: str | None = None, before: float = 0.0
    ) -> list[OutboxRow]:
        """The store's unsent commands (see :meth:`MessageStore.outbox_unsent`)."""
        return await self.store.outbox_unsent(limit, owner=owner, before=before)

    async def published(self, saga_id: str, step: str, kind: str) -> bool:
        """Whether the latest ``kind`` command of step ``step`` of ``saga_id`` (the one the
        attempt under way recorded) was published."""
        return await self.store.outbox_published(saga_id, step, kind)

    async def mark_sent(self, ids: list[int]) -> None:
        """Record that RabbitMQ confirmed the commands ``ids``."""
        await self.store.outbox_mark_sent(ids)

    async def prune(self, before: float) -> tuple[int, int]:
        """Delete the old sent commands and replies (see :meth:`MessageStore.prune_messages`)."""
        return await self.store.prune_messages(before)

    async def add_reply(self, saga_id: str, name: str, payload: JSONObject) -> bool:
        """Store a reply once; whether it was new. Wakes a step waiting for it here."""
        new = await self.store.add_reply(saga_id, name, payload)
        waiter = self._waiters.get((saga_id, name))
        if waiter is not None:
            waiter.set()
        return new

    async def reply(self, saga_id: str, name: str) -> JSONObject | None:
        """The stored reply ``name`` of ``saga_id``, if it came."""
        return await self.store.reply(saga_id, name)

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
