"""The outbox and the replies of :class:`~sagakit.store.memory.MemoryStore`, in memory."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from sagakit.records import JSONObject, OutboxMessage, SagaInstance, SagaStatus
from sagakit.store.base import OutboxRow

#: The statuses whose replies pruning keeps (an operator's retry may still wait for one).
KEEP_REPLIES = frozenset({SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.FAILED})


@dataclass(slots=True)
class Mailbox:
    """What the memory store knows of its commands and replies beside ``outbox`` itself."""

    #: When each command (by id) was first seen, and when it was marked sent.
    created: dict[int, float] = field(default_factory=dict)
    sent: dict[int, float] = field(default_factory=dict)
    #: The ids pruning deleted.
    deleted: set[int] = field(default_factory=set)
    #: Each (saga id, name)'s reply and when it was kept.
    replies: dict[tuple[str, str], tuple[JSONObject, float]] = field(default_factory=dict)


class MemoryMessages:
    """The :class:`~sagakit.store.base.MessageStore` methods over ``MemoryStore.outbox``.

    A command's id is its place in ``outbox`` (from 1). Its time of writing is the first
    time anyone looks at the outbox after it: the memory store lives in one process, whose
    relay looks at once.
    """

    _clock: Callable[[], float]
    _instances: dict[str, SagaInstance]
    outbox: list[tuple[str, OutboxMessage]]

    @functools.cached_property
    def _mailbox(self) -> Mailbox:
        return Mailbox()

    def _commands(self) -> list[tuple[int, str, OutboxMessage]]:
        """Every command not pruned, as (id, saga id, message), stamping the new ones."""
        box = self._mailbox
        for number in range(len(box.created) + 1, len(self.outbox) + 1):
            box.created[number] = self._clock()
        return [
            (number, saga_id, message)
            for number, (saga_id, message) in enumerate(self.outbox, start=1)
            if number not in box.deleted
        ]

    async def outbox_unsent(
        self, limit: int = 100, *, owner: str | None = None, before: float = 0.0
    ) -> list[OutboxRow]:
        box = self._mailbox
        rows = [
            _row(number, saga_id, message)
            for number, saga_id, message in self._commands()
            if number not in box.sent
            and (owner is None or box.created[number] < before or self._owner(saga_id) == owner)
        ]
        return rows[:limit]

    def _owner(self, saga_id: str) -> str | None:
        saga = self._instances.get(saga_id)
        return None if saga is None else saga.owner

    async def outbox_published(self, saga_id: str, step: str, kind: str) -> bool:
        for number, s, message in reversed(self._commands()):
            if (s, message.step, message.kind) == (saga_id, step, kind):
                return number in self._mailbox.sent
        return False

    async def outbox_mark_sent(self, ids: list[int]) -> None:
        at = self._clock()
        self._mailbox.sent.update((number, at) for number in ids)

    async def add_reply(self, saga_id: str, name: str, payload: JSONObject) -> bool:
        replies = self._mailbox.replies
        if (saga_id, name) in replies:
            return False
        replies[saga_id, name] = (orjson.loads(orjson.dumps(payload)), self._clock())
        return True

    async def reply(self, saga_id: str, name: str) -> JSONObject | None:
        kept = self._mailbox.replies.get((saga_id, name))
        return None if kept is None else kept[0]

    async def prune_messages(self, before: float) -> tuple[int, int]:
        box = self._mailbox
        sent = [n for n, at in box.sent.items() if at < before and n not in box.deleted]
        box.deleted.update(sent)
        replies = [
            key for key, (_, at) in box.replies.items() if at < before and not self._active(key[0])
        ]
        for key in replies:
            del box.replies[key]
        return len(sent), len(replies)

    def _active(self, saga_id: str) -> bool:
        saga = self._instances.get(saga_id)
        return saga is not None and saga.status in KEEP_REPLIES


def _row(number: int, saga_id: str, message: OutboxMessage) -> OutboxRow:
    body = orjson.dumps(message.body).decode()
    return OutboxRow(
        id=number, saga_id=saga_id, step=message.step, key=message.key, kind=message.kind, body=body
    )
