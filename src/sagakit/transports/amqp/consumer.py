"""A participant's side of AMQP: consume its commands, apply each once, reply, ack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from sagakit.records import JSONObject
from sagakit.settings import Settings
from sagakit.transports.amqp.broker import declare, keep_connecting, message, queue_names

logger = logging.getLogger("sagakit.amqp")

#: A command's handling: (key, body) to the answer replied (``outcome``, ``result``/``error``).
Handler = Callable[[str, JSONObject], Awaitable[JSONObject]]


async def handle_command(
    handlers: Mapping[str, Handler],
    channel: AbstractChannel,
    prefix: str,
    incoming: AbstractIncomingMessage,
) -> None:
    """Apply one command (once per key), publish its reply, then ack it."""
    try:
        command = orjson.loads(incoming.body)
        key, kind, body = str(command["key"]), str(command["kind"]), command["body"]
        answer = await handlers[kind](key, body)
        reply: JSONObject = {
            "saga_id": command["saga_id"],
            "name": f"{command['step']}.{kind}",
            "key": key,
            "attempt": body.get("attempt"),
            **answer,
        }
        await channel.default_exchange.publish(
            message(reply, f"{key}:{kind}:reply"), routing_key=queue_names(prefix)["replies"]
        )
    except Exception:
        logger.exception(
            "command failed; %s", "dead-lettered" if incoming.redelivered else "requeued"
        )
        await incoming.reject(requeue=not incoming.redelivered)
        return
    await incoming.ack()


@contextlib.asynccontextmanager
async def consuming(
    kind: str, settings: Settings, handlers: Mapping[str, Handler]
) -> AsyncIterator[None]:
    """Consume the ``kind`` command queue with ``handlers`` while the context is open.

    The connection is made in the background (waiting for RabbitMQ if it does not answer
    yet), so the participant's HTTP API serves meanwhile.
    """

    async def setup(connection: AbstractRobustConnection) -> None:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=20)
        queues = await declare(channel, settings.amqp_prefix, (kind,))

        async def on_command(incoming: AbstractIncomingMessage) -> None:
            await handle_command(handlers, channel, settings.amqp_prefix, incoming)

        await queues[kind].consume(on_command)
        logger.info("%s participant consuming %s", kind, queues[kind].name)

    connecting = asyncio.create_task(
        keep_connecting(settings, kind, setup), name=f"sagakit-amqp-{kind}"
    )
    try:
        yield
    finally:
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connecting
        if not connecting.cancelled():
            await connecting.result().close()
