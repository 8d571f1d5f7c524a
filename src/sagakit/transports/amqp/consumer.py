"""A participant's side of AMQP: consume its commands, apply each once, reply, ack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from sagakit.records import JSONObject
from sagakit.settings import Settings
from sagakit.shop.base import ShopStore
from sagakit.transports.amqp.broker import declare, keep_connecting, message, queue_names

logger = logging.getLogger("sagakit.amqp")

Apply = Callable[[ShopStore, str, JSONObject], Awaitable[JSONObject]]


async def _charge(shop: ShopStore, key: str, body: JSONObject) -> JSONObject:
    amount = body["amount"]
    assert isinstance(amount, int)
    rejection = await shop.charge(key, str(body["user_id"]), amount)
    return _answer(rejection, {"payment_id": key, "amount": amount})


async def _reserve(shop: ShopStore, key: str, body: JSONObject) -> JSONObject:
    lines = body["lines"]
    assert isinstance(lines, dict)
    rejection = await shop.reserve(
        key,
        str(body["order_id"]),
        {str(k): int(v) for k, v in lines.items()},  # type: ignore[arg-type]
    )
    return _answer(rejection, {"reservation_id": key})


async def _ship(shop: ShopStore, key: str, body: JSONObject) -> JSONObject:
    rejection = await shop.ship(key, str(body["order_id"]), str(body["address"]))
    return _answer(rejection, {"shipment_id": key})


def _answer(rejection: str | None, result: JSONObject) -> JSONObject:
    if rejection:
        return {"outcome": "refused", "error": rejection}
    return {"outcome": "ok", "result": result}


def _undo(undo: Callable[[ShopStore, str], Awaitable[bool]]) -> Apply:
    async def apply(shop: ShopStore, key: str, body: JSONObject) -> JSONObject:
        return {"outcome": "ok", "result": {"undone": await undo(shop, key)}}

    return apply


COMMANDS: Final[dict[str, Apply]] = {
    "charge": _charge,
    "refund": _undo(lambda shop, key: shop.refund(key)),
    "reserve": _reserve,
    "release": _undo(lambda shop, key: shop.release(key)),
    "ship": _ship,
    "cancel": _undo(lambda shop, key: shop.cancel_shipment(key)),
}


async def handle_command(
    shop: ShopStore, channel: AbstractChannel, prefix: str, incoming: AbstractIncomingMessage
) -> None:
    """Apply one command (once per key), publish its reply, then ack it."""
    try:
        command = orjson.loads(incoming.body)
        key, kind, body = str(command["key"]), str(command["kind"]), command["body"]
        answer = await COMMANDS[kind](shop, key, body)
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
async def consuming(kind: str, settings: Settings, shop: ShopStore) -> AsyncIterator[None]:
    """Consume the ``kind`` command queue into ``shop`` while the context is open.

    The connection is made in the background (waiting for RabbitMQ if it does not answer
    yet), so the participant's HTTP API serves meanwhile.
    """

    async def setup(connection: AbstractRobustConnection) -> None:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=20)
        queues = await declare(channel, settings.amqp_prefix)

        async def on_command(incoming: AbstractIncomingMessage) -> None:
            await handle_command(shop, channel, settings.amqp_prefix, incoming)

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
