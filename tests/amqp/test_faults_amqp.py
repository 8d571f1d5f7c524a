"""Faults with the participants over RabbitMQ: SIGKILL, connection restarts, duplicates,
a participant slower than the reply timeout, replies lost after their effect.

Afterwards every saga has finished, money and stock are conserved across the services'
separate databases, and each completed saga's effects exist exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import aio_pika
import httpx
import orjson
import pytest

from sagakit.api.participants import KINDS, Kind
from sagakit.transports.amqp.broker import queue_names
from tests.amqp.conftest import AMQP_URL, AmqpDistributed, Proxy
from tests.distributed.test_faults import recorded, submit, wait_until

ORDERS = 40


async def create_orders(client: httpx.AsyncClient, count: int) -> list[str]:
    """The buyer and the widget (created at the participants), and ``count`` orders.

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
    async with server.client() as client:
        orders = await create_orders(client, ORDERS)
        load = asyncio.create_task(submit(client, orders))
        await wait_until(lambda: recorded(amqp) >= 10)
        await amqp.participants[kind].kill()
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
    names = queue_names(amqp.prefix, KINDS)
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
    names = queue_names(amqp.prefix, KINDS)
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
    assert amqp.participants["payment"].alive


async def test_orchestrator_killed_under_load_is_taken_over_and_effects_stay_exactly_once(
    amqp: AmqpDistributed,
) -> None:
    """SIGKILL of ``sagakit serve`` mid-load: a new one finishes every saga, each effect once."""
    server = await amqp.start()
    async with server.client() as client:
        orders = await create_orders(client, ORDERS)
        load = asyncio.create_task(submit(client, orders))
        await wait_until(lambda: recorded(amqp) >= 10)
        await server.kill()
        active_at_kill = amqp.active_sagas()
        await load
    restarted = await amqp.serve()
    async with restarted.client() as client:
        # Orders whose checkout never reached the dead process are checked out now.
        assert set(await submit(client, orders)) <= {200, 202, 400}
        await amqp.wait_all_finished(60)

    assert active_at_kill > 0, "the kill came after the load"
    sagas = amqp.rows("SELECT business_key, status FROM saga_instances")
    # An order whose saga was compensated before the re-submission (a blank address) is
    # checked out again by it, as the contract allows: it may have two compensated sagas.
    assert {key for key, _ in sagas} == set(orders)
    assert {status for _, status in sagas} <= {"completed", "compensated"}
    completed = Counter(key for key, status in sagas if status == "completed")
    assert len(completed) == ORDERS - ORDERS // 4
    assert set(completed.values()) == {1}, "an order completed twice"
    amqp.assert_exactly_once(balance=BALANCE, stock=STOCK)


async def step_attempts(client: httpx.AsyncClient, saga_id: str, step: str) -> int:
    """How many times the saga's ``step`` was tried, from ``GET /sagas/{id}``."""
    saga = (await client.get(f"/sagas/{saga_id}")).json()
    return int(next(s["attempts"] for s in saga["steps"] if s["name"] == step))


async def test_participant_slower_than_the_reply_timeout_is_asked_again_and_charges_once(
    amqp: AmqpDistributed,
) -> None:
    """Payment stalls (SIGSTOP) past the reply timeout; the steps send again, charge once.

    Every command waits in the stalled participant's queue while its step gives up waiting
    (one second) and sends it again with the same key; once the participant goes on, it
    applies the first of each key and answers the duplicates from its inbox.
    """
    server = await amqp.start(env={"SAGAKIT_AMQP_REPLY_SECONDS": "1"})
    payment = amqp.participants["payment"]
    async with server.client() as client:
        orders = await create_orders(client, 12)
        payment.signal(signal.SIGSTOP)
        try:
            checkouts = asyncio.gather(*(client.post(f"/checkout/{o}") for o in orders))
            await wait_until(lambda: recorded(amqp) == len(orders))
            saga_ids = [str(s) for (s,) in amqp.rows("SELECT saga_id FROM saga_instances")]

            async def all_sent_again() -> bool:
                tries = [await step_attempts(client, s, "payment") for s in saga_ids]
                return min(tries) >= 2

            await wait_until_async(all_sent_again, timeout=20.0)
            assert amqp.rows_of("payment", "SELECT count(*) FROM payments") == [(0,)]
        finally:
            resumed_at = time.time()
            payment.signal(signal.SIGCONT)
        answers = await checkouts

    assert sorted(a.status_code for a in answers) == [200] * 9 + [400] * 3
    # Every charge was applied after the participant went on, none before.
    [(first_charge,)] = amqp.rows_of("payment", "SELECT min(updated_at) FROM payments")
    assert isinstance(first_charge, float)
    assert first_charge >= resumed_at
    amqp.assert_exactly_once(balance=BALANCE, stock=STOCK)


#: The participant's table of each step, where its effect is recorded by key.
TABLES: dict[Kind, str] = {
    "payment": "payments",
    "inventory": "reservations",
    "shipping": "shipments",
}


async def drain_replies(prefix: str) -> list[dict[str, object]]:
    """Take every reply waiting in the replies queue and drop it, until none comes for 0.5 s."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_names(prefix, KINDS)["replies"])
        dropped: list[dict[str, object]] = []
        last = time.monotonic()
        while time.monotonic() - last < 0.5:
            incoming = await queue.get(no_ack=True, fail=False)
            if incoming is None:
                await asyncio.sleep(0.05)
                continue
            dropped.append(orjson.loads(incoming.body))
            last = time.monotonic()
        return dropped


async def replies_consumed(prefix: str) -> bool:
    """Whether the checkout consumes its replies queue (after it reconnected)."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_names(prefix, KINDS)["replies"], passive=True)
        assert queue.declaration_result is not None
        return queue.declaration_result.consumer_count == 1


async def test_replies_lost_after_their_effect_are_asked_again_and_apply_once(
    amqp: AmqpDistributed,
) -> None:
    """Replies dropped from RabbitMQ after the effect: the steps send again, each once.

    The checkout reaches RabbitMQ through a proxy, the participants directly. While the
    checkouts run, in rounds: the proxy holds back what RabbitMQ sends the checkout (the
    relay still publishes, and the participants apply and reply); then the checkout's
    connection is cut (RabbitMQ requeues the replies it had handed over) and refused
    while the test drops every waiting reply; then it reconnects. Three rounds, then every
    saga must end.
    """
    await asyncio.gather(*(amqp.participant(kind) for kind in KINDS))
    proxy = Proxy()
    await proxy.start()
    amqp.amqp_url = proxy.url
    server = await amqp.serve(env={"SAGAKIT_AMQP_REPLY_SECONDS": "2"})
    dropped: list[dict[str, object]] = []
    async with server.client() as client:
        orders = await create_orders(client, 8)
        checkouts = asyncio.gather(*(client.post(f"/checkout/{o}") for o in orders))
        await wait_until(lambda: recorded(amqp) == len(orders))
        # Three rounds at most: a step loses at most three replies, fewer than its six tries
        # (more rounds on a slow machine would exhaust some steps, which then compensate).
        for _ in range(3):
            if not amqp.active_sagas():
                break
            proxy.pause()
            await asyncio.sleep(0.5)
            proxy.refusing = True
            proxy.cut()
            dropped += await drain_replies(amqp.prefix)
            proxy.refusing = False
            proxy.resume()
            await wait_until_async(lambda: replies_consumed(amqp.prefix))
            await asyncio.sleep(0.2)
        answers = await checkouts
    await amqp.wait_all_finished(45)
    await proxy.close()

    assert sorted(a.status_code for a in answers) == [200] * 6 + [400] * 2
    # Each dropped reply answered a command whose effect had been applied (or refused).
    for reply in dropped:
        kind = next(k for k in KINDS if str(reply["name"]).startswith(f"{k}."))
        sql = f"SELECT count(*) FROM {TABLES[kind]} WHERE idempotency_key = ?"
        assert amqp.rows_of(kind, sql, (reply["key"],)) == [(1,)], reply
    # At least one was the answer to an action the participant had applied.
    actions = {"payment.charge", "inventory.reserve", "shipping.ship"}
    assert any(r["outcome"] == "ok" and r["name"] in actions for r in dropped), dropped
    assert amqp.active_sagas() == 0
    assert amqp.statuses() == {"completed": 6, "compensated": 2}
    amqp.assert_exactly_once(balance=BALANCE, stock=STOCK)


async def test_checkout_service_started_while_rabbitmq_does_not_answer_waits_for_it(
    amqp: AmqpDistributed,
) -> None:
    """Started with RabbitMQ unreachable, the service serves; its commands go out later.

    The checkout service reaches RabbitMQ through a proxy that refuses every connection:
    it starts anyway, answers, records the checkouts with their commands in the outbox.
    The outage lasts longer than a step's six tries of 0.5 s replies (about 8 s with the
    backoff), yet no try is used up: a step whose command was never published keeps
    waiting. Once the proxy lets connections through, every saga finishes forward, each
    step at its first try: a command published late in a reply window still gets a whole
    window for its reply.
    """
    await asyncio.gather(*(amqp.participant(kind) for kind in KINDS))
    proxy = Proxy()
    await proxy.start()
    proxy.refusing = True
    amqp.amqp_url = proxy.url
    server = await amqp.serve(env={"SAGAKIT_AMQP_REPLY_SECONDS": "0.5"})
    async with server.client() as client:
        orders = await create_orders(client, 8)
        answers = [await client.post(f"/checkout/{o}", params={"wait": "false"}) for o in orders]
        assert [a.status_code for a in answers] == [202] * len(orders)
        await asyncio.sleep(10.0)
        unsent = "SELECT count(*) FROM saga_outbox WHERE sent_at IS NULL"
        assert amqp.rows(unsent) == [(len(orders),)]
        assert amqp.statuses() == {"running": len(orders)}
        assert amqp.rows("SELECT max(attempts) FROM saga_steps") == [(1,)]

        proxy.refusing = False
        await amqp.wait_all_finished(60)
    await proxy.close()

    assert amqp.statuses() == {"completed": 6, "compensated": 2}
    assert amqp.rows(unsent) == [(0,)]
    assert amqp.rows("SELECT max(attempts) FROM saga_steps") == [(1,)]
    assert "does not answer" in server.log.read_text()
    amqp.assert_exactly_once(balance=BALANCE, stock=STOCK)
