"""RabbitMQ for the ``amqp`` target: is it there, queues of one run's own, deleted after.

Each server run of the ``amqp`` target gets a queue prefix of its own
(``SAGAKIT_AMQP_PREFIX``), so that nothing left by another run (or by the tests) is
consumed; its queues and its dead-letter exchange are deleted when the run ends, after the
messages left in them are counted (a dead-lettered command is a problem of the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import aio_pika
import aio_pika.exceptions

DEFAULT_AMQP: Final = "amqp://guest:guest@127.0.0.1:5672/"
#: The queues that ``sagakit.transports.amqp.broker.queue_names`` names, as its keys.
QUEUES: Final = ("payment", "inventory", "shipping", "replies", "dead")


class Unavailable(RuntimeError):
    """A service that a target needs does not answer: the target is not measured."""


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether something accepts TCP connections at the host and port of ``url``."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout):
            return True
    except OSError:
        return False


def _names(prefix: str) -> dict[str, str]:
    # Imported here: only the amqp target needs it (and the module is being worked on).
    from sagakit.transports.amqp.broker import queue_names

    return queue_names(prefix, ("payment", "inventory", "shipping"))


async def _consumers(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return 0  # not declared yet: nobody consumes it
        result = declared.declaration_result
        return int(result.consumer_count or 0)


async def _messages_then_delete(url: str, prefix: str) -> dict[str, int]:
    names = _names(prefix)
    left: dict[str, int] = {}
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        for key in QUEUES:
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(names[key], passive=True)
                left[key] = int(declared.declaration_result.message_count or 0)
                await channel.queue_delete(names[key])
            except aio_pika.exceptions.ChannelClosed:
                continue  # never declared
        channel = await connection.channel()
        with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
            await channel.exchange_delete(names["dlx"])
    return left


@dataclass(slots=True)
class Queues:
    """One run's queues: their prefix, and what was left in them at the end."""

    url: str
    prefix: str
    #: Messages left in each queue when it was deleted (filled in on the way out).
    left: dict[str, int] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The settings every process of the run shares."""
        return {"SAGAKIT_AMQP_URL": self.url, "SAGAKIT_AMQP_PREFIX": self.prefix}

    def consuming(self, kind: str) -> bool:
        """Whether the ``kind`` participant's command queue has a consumer now."""
        try:
            return asyncio.run(_consumers(self.url, _names(self.prefix)[kind])) > 0
        except (OSError, aio_pika.exceptions.AMQPError, TimeoutError):
            return False

    def problems(self) -> list[str]:
        """A command dead-lettered (its participant failed it twice) is a problem."""
        dead = self.left.get("dead", 0)
        return [f"{dead} commands dead-lettered"] if dead else []


@contextlib.contextmanager
def fresh_queues(url: str, label: str) -> Iterator[Queues]:
    """A queue prefix of this run's own; its queues and exchange are deleted on the way out.

    Raises :class:`Unavailable` at once when nothing answers at ``url``.
    """
    if not answers(url):
        parts = urlsplit(url)
        raise Unavailable(
            f"RabbitMQ does not answer at {parts.hostname}:{parts.port or 5672}"
            " (BENCH_AMQP_URL or --amqp-url); the amqp target was not measured"
        )
    queues = Queues(url=url, prefix=f"sagakit-bench-{label}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        yield queues
    finally:
        try:
            queues.left = asyncio.run(_messages_then_delete(url, queues.prefix))
        except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
            print(f"bench: the queues {queues.prefix}.* were not deleted: {exc!r}", flush=True)
