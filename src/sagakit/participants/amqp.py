"""The AMQP transport (RabbitMQ, through aio-pika): commands and replies as messages.

The checkout service (``SAGAKIT_PARTICIPANTS=amqp``):

- each checkout step's command (``charge``, ``reserve``, ``ship``, or the compensation
  ``refund``, ``release``, ``cancel``) is written to the ``saga_outbox`` table of the saga
  store in the very transaction that records the attempt (``Step.outgoing``), and the
  step waits for its reply in ``saga_replies``; a refusal becomes ``StepFailed``, no reply
  within ``amqp_reply_seconds`` is transient (the step retries with the same key, and the
  retry's record carries the command again);
- a *relay* publishes the unsent outbox rows as persistent messages with publisher confirms,
  and marks them sent only once RabbitMQ confirmed them (a crash in between publishes again,
  and the participant's inbox makes the duplicate harmless);
- a *reply consumer* stores each reply once per (saga, name) and acks it after that commit:
  a reply delivered twice, or before its step waits for it, changes nothing.

A participant (``sagakit participant KIND --transport amqp``) consumes its durable command
queue with manual acks, applies each command through the same inbox SQL as the HTTP
services (the effect and its inbox row in one transaction, deduplicated by the key),
publishes the reply (persistent, confirmed), and only then acks. A command that fails
again after a redelivery is rejected to the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from sagakit.extras import missing_extra

try:
    import aio_pika
    from aio_pika.abc import (
        AbstractChannel,
        AbstractIncomingMessage,
        AbstractQueue,
        AbstractRobustConnection,
    )
except ModuleNotFoundError as exc:
    missing_extra(exc, "The AMQP transport")

from sagakit.errors import SagakitError, StepFailed, StoreError
from sagakit.records import JSON, JSONObject, OutboxMessage
from sagakit.retry import RetryPolicy
from sagakit.saga import Saga, Step, StepContext
from sagakit.settings import Settings
from sagakit.shop.base import ShopStore
from sagakit.shop.participants import CHECKOUT
from sagakit.store.base import SagaStore

logger = logging.getLogger("sagakit.amqp")

#: A step whose reply does not come is tried again (same key) this many times in all.
AMQP_RETRY: Final = RetryPolicy(max_attempts=6, initial_delay=0.2, max_delay=2.0)
#: (step, action, compensation) of the checkout.
PLAN: Final = (
    ("payment", "charge", "refund"),
    ("inventory", "reserve", "release"),
    ("shipping", "ship", "cancel"),
)


#: Seconds after which a relay publishes a command of a saga another process holds (that
#: process's relay should have: it is dead, or cannot reach RabbitMQ).
RELAY_GRACE_SECONDS: Final = 2.0
#: A step waiting for its reply looks in ``saga_replies`` after this many seconds, then
#: after twice as long each time, up to ``REPLY_POLL_LAST``.
REPLY_POLL_FIRST: Final = 0.01
REPLY_POLL_LAST: Final = 0.5
#: How often the checkout service deletes the sent commands and replies past retention.
PRUNE_SECONDS: Final = 300.0


class ReplyTimeout(SagakitError):
    """No reply came for a command in time: transient, the step retries with the same key."""


def queue_names(prefix: str) -> dict[str, str]:
    """The queue (and exchange) names under ``prefix``."""
    return {
        "payment": f"{prefix}.payment.commands",
        "inventory": f"{prefix}.inventory.commands",
        "shipping": f"{prefix}.shipping.commands",
        "replies": f"{prefix}.replies",
        "dlx": f"{prefix}.dlx",
        "dead": f"{prefix}.dead",
    }


async def declare(channel: AbstractChannel, prefix: str) -> dict[str, AbstractQueue]:
    """Declare the durable queues and the dead-letter exchange and queue; idempotent."""
    names = queue_names(prefix)
    dlx = await channel.declare_exchange(names["dlx"], aio_pika.ExchangeType.FANOUT, durable=True)
    dead = await channel.declare_queue(names["dead"], durable=True)
    await dead.bind(dlx)
    arguments: dict[str, Any] = {"x-dead-letter-exchange": names["dlx"]}
    queues = {"dead": dead}
    for name in ("payment", "inventory", "shipping", "replies"):
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


# -- the outbox and the replies, in the saga store's database ------------------------------


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


# -- the checkout steps --------------------------------------------------------------------


def _body(step: str, ctx: StepContext) -> JSONObject:
    if step == "payment":
        return {"user_id": ctx.input["user_id"], "amount": ctx.input["total"]}
    if step == "inventory":
        return {"order_id": ctx.input["order_id"], "lines": ctx.input["items"]}
    return {"order_id": ctx.input["order_id"], "address": ctx.input["address"]}


class AmqpStep(Step):
    """A checkout step whose action and compensation are commands sent through the outbox.

    The command is the step's outgoing message: the orchestrator writes it to the outbox
    in the transaction that records the attempt, so no attempt is recorded without its
    command, and no command exists for an attempt that was not recorded. ``do`` and
    ``compensate`` only wait for the reply.
    """

    retry = AMQP_RETRY

    def __init__(self, outbox: Outbox, *, name: str, action: str, undo: str, wait: float) -> None:
        self.name = name
        self.outbox = outbox
        self.action = action
        self.undo = undo
        self.wait = wait
        # No limit on an attempt as a whole: ``_reply`` bounds each wait for a published
        # command, and waits for as long as RabbitMQ cannot even be reached.
        self.timeout = None

    def outgoing(self, ctx: StepContext, *, compensation: bool) -> OutboxMessage:
        """The command of this attempt: the action, or (``compensation``) its undoing."""
        body = {} if compensation else _body(self.name, ctx)
        return OutboxMessage(
            step=self.name,
            key=ctx.idempotency_key,
            kind=self.undo if compensation else self.action,
            body={**body, "attempt": ctx.attempt},
        )

    async def _reply(self, ctx: StepContext, kind: str) -> JSONObject:
        """The reply to this attempt's command (or an earlier attempt's: same key).

        ``ReplyTimeout`` (the step tries again) when ``wait`` seconds passed and this
        attempt's command was published; while it was not (RabbitMQ unreachable), it keeps
        waiting: an outage is not the participant's failure, and should not use up the
        step's tries and turn the saga backward.
        """
        # The command was committed with this attempt's record, just before: publish it now.
        self.outbox.added.set()
        name = f"{self.name}.{kind}"
        while True:
            try:
                return await self.outbox.wait_reply(ctx.saga_id, name, self.wait)
            except ReplyTimeout:
                if await self.outbox.published(ctx.saga_id, self.name, kind):
                    raise

    async def do(self, ctx: StepContext) -> JSON:
        """Wait for the action's reply; a refusal raises ``StepFailed``."""
        reply = await self._reply(ctx, self.action)
        if reply.get("outcome") == "refused":
            raise StepFailed(str(reply.get("error") or "refused"))
        return reply.get("result")

    async def compensate(self, ctx: StepContext) -> None:
        """Wait for the compensation's reply (raises, and is retried, without one)."""
        await self._reply(ctx, self.undo)


class AmqpParticipants:
    """The checkout's AMQP side in the checkout service: steps, relay and reply consumer."""

    def __init__(self, settings: Settings, store: SagaStore) -> None:
        self.settings = settings
        self.outbox = Outbox(store)
        #: The orchestrator's owner id, once it exists: the relay publishes the commands of
        #: this process's sagas at once, and others' when ``RELAY_GRACE_SECONDS`` late.
        self.owner: str | None = None
        self.connection: AbstractRobustConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def checkout_saga(self, *, compensation_retry: RetryPolicy | None = None) -> Saga:
        """The ``checkout`` saga over AMQP: the same name, steps and results as in-process."""
        steps: list[Step] = [
            AmqpStep(
                self.outbox,
                name=name,
                action=action,
                undo=undo,
                wait=self.settings.amqp_reply_seconds,
            )
            for name, action, undo in PLAN
        ]
        if compensation_retry is not None:
            for step in steps:
                step.compensation_retry = compensation_retry
        return Saga(CHECKOUT, steps)

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
            queues = await declare(channel, self.settings.amqp_prefix)
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
        names = queue_names(self.settings.amqp_prefix)
        while True:
            # Cleared before looking: a command recorded while we look sets it again, and
            # the wait below returns at once instead of a poll later.
            self.outbox.added.clear()
            try:
                late = time.time() - RELAY_GRACE_SECONDS
                rows = await self.outbox.unsent(owner=self.owner, before=late)
                # All at once: the confirms come back together rather than one by one.
                outcomes = await asyncio.gather(
                    *(
                        channel.default_exchange.publish(
                            message(
                                {
                                    "saga_id": saga_id,
                                    "step": step,
                                    "key": key,
                                    "kind": kind,
                                    "body": orjson.loads(body),
                                },
                                f"{key}:{kind}:{row_id}",
                            ),
                            routing_key=names[step],
                        )
                        for row_id, saga_id, step, key, kind, body in rows
                    ),
                    return_exceptions=True,
                )
                sent = [
                    row[0]
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


# -- the participant side ------------------------------------------------------------------

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
