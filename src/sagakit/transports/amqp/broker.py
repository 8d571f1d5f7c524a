"""The AMQP broker: connecting to RabbitMQ, the durable queues, persistent messages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection

from sagakit.records import JSONObject
from sagakit.settings import Settings

logger = logging.getLogger("sagakit.amqp")


def queue_names(prefix: str, participants: Iterable[str] = ()) -> dict[str, str]:
    """The queue (and exchange) names under ``prefix``: each participant's command queue
    (by its name), ``replies``, and the dead letters' ``dlx`` exchange and ``dead`` queue."""
    names = {participant: f"{prefix}.{participant}.commands" for participant in participants}
    names.update(replies=f"{prefix}.replies", dlx=f"{prefix}.dlx", dead=f"{prefix}.dead")
    return names


async def declare(
    channel: AbstractChannel, prefix: str, participants: Iterable[str]
) -> dict[str, AbstractQueue]:
    """Declare the participants' command queues, the replies queue and the dead-letter
    exchange and queue, all durable; idempotent."""
    participants = tuple(participants)
    names = queue_names(prefix, participants)
    dlx = await channel.declare_exchange(names["dlx"], aio_pika.ExchangeType.FANOUT, durable=True)
    dead = await channel.declare_queue(names["dead"], durable=True)
    await dead.bind(dlx)
    arguments: dict[str, Any] = {"x-dead-letter-exchange": names["dlx"]}
    queues = {"dead": dead}
    for name in (*participants, "replies"):
        queues[name] = await channel.declare_queue(names[name], durable=True, arguments=arguments)
    return queues


async def connect(settings: Settings, role: str) -> AbstractRobustConnection:
    """A connection that reconnects (and redeclares its queues and consumers) by itself.

    Its name, ``PREFIX.ROLE``, shows in ``rabbitmqctl list_connections``.
    """
    return await aio_pika.connect_robust(
        settings.amqp_url,
        client_properties={"connection_name": f"{settings.amqp_prefix}.{role}"},
        reconnect_interval=1.0,
    )


async def keep_connecting(
    settings: Settings,
    role: str,
    setup: Callable[[AbstractRobustConnection], Awaitable[None]],
) -> AbstractRobustConnection:
    """:func:`connect`, then ``setup`` (channels, queues, consumers) on the connection.

    While RabbitMQ does not answer (down, not started yet, a wrong address), or ``setup``
    fails, try again after 1 s, doubling up to 10 s, with a warning each time: a process
    that starts before its broker waits for it instead of dying. Once connected, the
    connection itself reconnects and redeclares what ``setup`` declared.
    """
    delay = 1.0
    address = urlsplit(settings.amqp_url)
    where = f"{address.hostname}:{address.port or 5672}"
    while True:
        try:
            connection = await connect(settings, role)
        except Exception as exc:
            failure = f"does not answer ({type(exc).__name__}: {exc})"
        else:
            try:
                await setup(connection)
            except BaseException as exc:
                await connection.close()
                if not isinstance(exc, Exception):
                    raise
                failure = f"refused the setup ({type(exc).__name__}: {exc})"
            else:
                return connection
        logger.warning("RabbitMQ at %s %s; trying again in %.0f s", where, failure, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


def message(body: JSONObject, message_id: str) -> aio_pika.Message:
    """A persistent JSON message."""
    return aio_pika.Message(
        orjson.dumps(body),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        content_type="application/json",
        message_id=message_id,
    )
