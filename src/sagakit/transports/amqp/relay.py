"""The saga side of AMQP: the relay, the reply consumer and the pruner, in one connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from sagakit.records import JSONObject
from sagakit.saga import StepContext
from sagakit.settings import Settings
from sagakit.store.base import MessageStore, OutboxRow
from sagakit.transports.amqp.broker import declare, keep_connecting, message, queue_names
from sagakit.transports.amqp.outbox import Outbox
from sagakit.transports.amqp.steps import AmqpStep

logger = logging.getLogger("sagakit.amqp")

#: Seconds after which a relay publishes a command of a saga another process holds (that
#: process's relay should have: it is dead, or cannot reach RabbitMQ).
RELAY_GRACE_SECONDS: Final = 2.0
#: How often the checkout service deletes the sent commands and replies past retention.
PRUNE_SECONDS: Final = 300.0
#: Seconds a relay waits for one publish (its turn on the channel, its write, RabbitMQ's
#: confirm) before it gives up and publishes the command again on its next round. A
#: confirm takes milliseconds; a publish caught by a lost connection may never return:
#: aiormq leaves one waiting for room in the dead connection's full write queue for ever.
PUBLISH_SECONDS: Final = 5.0


class AmqpRelay:
    """A saga process's AMQP side: its steps' outbox, the relay and the reply consumer."""

    def __init__(
        self, settings: Settings, store: MessageStore, participants: Sequence[str]
    ) -> None:
        self.settings = settings
        #: The participants' names: each has a command queue, declared before publishing.
        self.participants = tuple(participants)
        self.outbox = Outbox(store)
        #: The orchestrator's owner id, once it exists: the relay publishes the commands of
        #: this process's sagas at once, and others' when ``RELAY_GRACE_SECONDS`` late.
        self.owner: str | None = None
        self.connection: AbstractRobustConnection | None = None
        #: How long one publish may take (``PUBLISH_SECONDS``).
        self.publish_seconds = PUBLISH_SECONDS
        self._tasks: list[asyncio.Task[None]] = []

    def step(
        self, name: str, *, action: str, undo: str, body: Callable[[StepContext], JSONObject]
    ) -> AmqpStep:
        """A step sending ``action`` (``undo`` to compensate) to participant ``name``."""
        wait = self.settings.amqp_reply_seconds
        return AmqpStep(self.outbox, name=name, action=action, undo=undo, body=body, wait=wait)

    async def start(self) -> None:
        """Start the relay and the reply consumer, once connected (in the background).

        The service does not wait for RabbitMQ: while it does not answer, checkouts are
        recorded and their commands wait in the outbox; they go out once it does.
        """
        self._tasks.append(asyncio.create_task(self._run(), name="sagakit-amqp-relay"))
        self._tasks.append(asyncio.create_task(self._pruner(), name="sagakit-amqp-pruner"))

    async def _run(self) -> None:
        """Connect (waiting for RabbitMQ if need be), consume the replies, then relay."""
        channels: list[AbstractChannel] = []

        async def setup(connection: AbstractRobustConnection) -> None:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=100)
            queues = await declare(channel, self.settings.amqp_prefix, self.participants)
            await queues["replies"].consume(self._on_reply)
            channels.append(channel)

        self.connection = await keep_connecting(self.settings, "checkout", setup)
        logger.info("checkout service connected to RabbitMQ")
        await self._relay(channels[0])

    async def _pruner(self) -> None:
        """Delete old sent commands and replies, every ``PRUNE_SECONDS``, for ever."""
        while True:
            before = time.time() - self.settings.amqp_retention_seconds
            try:
                sent, replies = await self.outbox.prune(before)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("outbox pruning failed; trying again later", exc_info=True)
            else:
                if sent or replies:
                    logger.info("pruned %d sent commands and %d replies", sent, replies)
            await asyncio.sleep(PRUNE_SECONDS)

    async def _on_reply(self, incoming: AbstractIncomingMessage) -> None:
        try:
            reply = orjson.loads(incoming.body)
            await self.outbox.add_reply(str(reply["saga_id"]), str(reply["name"]), reply)
        except Exception:
            logger.exception("reply not stored; redelivered or dead-lettered")
            await incoming.reject(requeue=not incoming.redelivered)
            return
        await incoming.ack()

    async def _relay(self, channel: AbstractChannel) -> None:
        """Publish unsent outbox rows (confirmed), then mark them sent; for ever."""
        names = queue_names(self.settings.amqp_prefix, self.participants)
        while True:
            # Cleared before looking: a command recorded while we look sets it again, and
            # the wait below returns at once instead of a poll later.
            self.outbox.added.clear()
            try:
                late = time.time() - RELAY_GRACE_SECONDS
                rows = await self.outbox.unsent(owner=self.owner, before=late)
                # All at once: the confirms come back together rather than one by one.
                # Each within its time: one that never returns would stop the relay for
                # good, and every step would wait for ever for its command's reply.
                seconds = self.publish_seconds
                outcomes = await asyncio.gather(
                    *(publish(channel, names[row.step], row, seconds) for row in rows),
                    return_exceptions=True,
                )
                sent = [
                    row.id
                    for row, out in zip(rows, outcomes, strict=True)
                    if not isinstance(out, BaseException)
                ]
                if sent:
                    await self.outbox.mark_sent(sent)
                failed = [out for out in outcomes if isinstance(out, BaseException)]
                if failed:
                    raise failed[0]
                if sent:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("outbox relay: publishing failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self.outbox.added.wait()

    async def close(self) -> None:
        """Stop the relay and close the connection."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.connection is not None:
            await self.connection.close()


async def publish(
    channel: AbstractChannel, queue: str, row: OutboxRow, seconds: float = PUBLISH_SECONDS
) -> None:
    """Publish the command ``row`` to ``queue`` (persistent; confirmed on return), or raise
    ``TimeoutError`` after ``seconds`` (the command may have gone out: it goes again, and
    its participant applies it once, by its key)."""
    command = {
        "saga_id": row.saga_id,
        "step": row.step,
        "key": row.key,
        "kind": row.kind,
        "body": orjson.loads(row.body),
    }
    async with asyncio.timeout(seconds):
        await channel.default_exchange.publish(
            message(command, f"{row.key}:{row.kind}:{row.id}"), routing_key=queue
        )
