"""Faults with the participants over RabbitMQ: SIGKILL, connection restarts, duplicates.

Afterwards every saga has finished, money and stock are conserved across the services'
separate databases, and each completed saga's effects exist exactly once.
"""

from __future__ import annotations

import asyncio

import aio_pika
import httpx
import orjson
import pytest

from sagakit.participants.amqp import queue_names
from sagakit.participants.service import KINDS, Kind
from tests.amqp.conftest import AMQP_URL, AmqpDistributed, Proxy
from tests.distributed.test_faults import recorded, submit, wait_until

ORDERS = 40


async def create_orders(client: httpx.AsyncClient, count: int) -> list[str]:
    """The buyer and the widget in the checkout's catalog copy, and ``count`` orders.

    Every fourth order has a blank address, so shipping refuses it and its payment and
    reservation are compensated.
    """
    user = {"user_id": "buyer", "balance": 1_000_000}
    item = {"item_id": "widget", "stock": 10_000, "price": 10}
    headers = {"Authorization": "Bearer recovery-admin-token"}
    assert (await client.post("/users", json=user, headers=headers)).status_code == 201
    assert (await client.post("/items", json=item, headers=headers)).status_code == 201
    orders = []
    for n in range(count):
        address = "" if n % 4 == 3 else f"{n} Main Street"
        body = {"order_id": f"o{n}", "user_id": "buyer", "items": {"widget": 1 + n % 3}}
        response = await client.post("/orders", json={**body, "address": address})
        assert response.status_code == 201, response.text
        orders.append(f"o{n}")
    return orders


BALANCE = 1_000_000 + 100 + 5
STOCK = 10_000 + 5 + 3


@pytest.mark.parametrize("kind", KINDS)
async def test_participant_killed_under_load_leaves_every_effect_exactly_once(
    amqp: AmqpDistributed, kind: Kind
) -> None:
    """SIGKILL of one participant mid-load, then its restart: nothing lost."""
    server = await amqp.start()
    amqp.add_buyer_and_widget()
    async with server.client() as client:
        orders = await create_orders(client, ORDERS)
        load = asyncio.create_task(submit(client, orders))
        await wait_until(lambda: recorded(amqp) >= 10)
        await amqp.amqp_participants[kind].kill()
        assert amqp.active_sagas() > 0, "the kill came after the load"
        await asyncio.sleep(0.5)
        await amqp.participant(kind)
        await load
    await amqp.wait_all_finished(60)
    assert len(amqp.completed_sagas()) == ORDERS - ORDERS // 4
    amqp.assert_exactly_once(balance=BALANCE, stock=STOCK)


async def test_connections_closed_under_load_reconnect_and_lose_nothing(
    amqp: AmqpDistributed,
) -> None:
    """Every connection of the checkout and its participants cut mid-load, twice."""
    proxy = Proxy()
    await proxy.start()
    amqp.amqp_url = proxy.url
    server = await amqp.start()
    amqp.add_buyer_and_widget()
    async with server.client() as client:
        orders = await create_orders(client, ORDERS)
        load = asyncio.create_task(submit(client, orders))
        await wait_until(lambda: recorded(amqp) >= 10)
        assert proxy.cut() == 4
        await wait_until(lambda: len(proxy.writers) == 8)
        done = len(amqp.completed_sagas())
        await wait_until(lambda: len(amqp.completed_sagas()) > done + 2)
        assert proxy.cut() == 4
        await load
        await amqp.wait_all_finished(60)
    await proxy.close()
    assert len(amqp.completed_sagas()) == ORDERS - ORDERS // 4
    amqp.assert_exactly_once(balance=BALANCE, stock=STOCK)


async def test_duplicated_commands_and_replies_apply_once(amqp: AmqpDistributed) -> None:
    """A command delivered three times charges once; its replies, stored once, are harmless."""
    server = await amqp.start()
    names = queue_names(amqp.prefix)
    async with server.client() as client:
        assert (await client.post("/checkout/order1")).status_code == 200
        saga_id = str(amqp.scalar("SELECT saga_id FROM saga_instances"))
        replies_before = amqp.rows("SELECT name, payload FROM saga_replies ORDER BY name")
        # The same charge three times (as a relay that crashed before marking it sent would),
        # and a reply for a saga that never waits for it (an early or stray reply).
        command = {
            "saga_id": saga_id,
            "step": "payment",
            "key": f"{saga_id}:payment",
            "kind": "charge",
            "body": {"user_id": "user1", "amount": 20, "attempt": 1},
        }
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            for _ in range(3):
                await channel.default_exchange.publish(
                    aio_pika.Message(orjson.dumps(command)), routing_key=names["payment"]
                )
            stray = {"saga_id": "nobody", "name": "payment.charge", "outcome": "ok"}
            await channel.default_exchange.publish(
                aio_pika.Message(orjson.dumps(stray)), routing_key=names["replies"]
            )

        async def drained() -> bool:
            count = amqp.integer("SELECT count(*) FROM saga_replies WHERE saga_id = 'nobody'")
            return count == 1

        await wait_until_async(drained)
        # The three replies of the duplicated charge arrived and changed nothing.
        await asyncio.sleep(0.5)
        assert amqp.rows(
            "SELECT name, payload FROM saga_replies WHERE saga_id = ? ORDER BY name", (saga_id,)
        ) == [r for r in replies_before]
        # The checkout goes on as before.
        assert (await client.post("/checkout/order3")).status_code == 400
    assert amqp.integer_of("payment", "SELECT balance FROM users WHERE user_id = 'user1'") == 80
    assert amqp.integer_of("payment", "SELECT count(*) FROM payments") == 2
    amqp.assert_exactly_once(balance=105, stock=8)


async def wait_until_async(check: object, timeout: float = 10.0) -> None:
    """Return once the coroutine function ``check`` answers true."""
    assert callable(check)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "not in time"
        await asyncio.sleep(0.05)


async def test_a_command_that_fails_twice_is_dead_lettered(amqp: AmqpDistributed) -> None:
    """A malformed command is requeued once, then lands in the dead-letter queue."""
    await amqp.participant("payment")
    names = queue_names(amqp.prefix)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(b"not json", message_id="poison"), routing_key=names["payment"]
        )
        dead = await channel.get_queue(names["dead"])

        async def dead_lettered() -> bool:
            incoming = await dead.get(fail=False)
            if incoming is None:
                return False
            assert (incoming.body, incoming.message_id) == (b"not json", "poison")
            await incoming.ack()
            return True

        await wait_until_async(dead_lettered)
    # The participant goes on consuming.
    assert amqp.amqp_participants["payment"].alive
