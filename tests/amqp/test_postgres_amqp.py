"""The AMQP checkout with its saga store on PostgreSQL: the demo, and SIGKILL under load.

``sagakit serve`` keeps its sagas, orders, outbox (``saga_outbox``) and replies
(``saga_replies``) in a PostgreSQL database of the test's own; the three participants keep
their effects in SQLite files of their own. Effects are checked in the participants'
databases, sagas and commands in PostgreSQL.

Each attempt a step records carries its command in the same statement (the ``outbox``
CTEs of ``INSERT_INSTANCE`` and ``UPDATE_FENCED``), so the outbox holds exactly one
action command per recorded attempt and one undoing command per compensation attempt;
every one of them is published, marked sent, and answered by one stored reply.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence

from tests.amqp.conftest import AmqpOnPostgres
from tests.distributed.conftest import BALANCE, STOCK, create_orders
from tests.distributed.test_faults import recorded, submit, wait_until
from tests.modes.conftest import Deployment
from tests.processes import ACTIVE, ServeProcess
from tests.scaleout.conftest import owned_by

ORDERS = 40
#: The commands of a step's action and of its undoing.
ACTIONS = ("charge", "reserve", "ship")
UNDOINGS = ("refund", "release", "cancel")


def unsent(amqp: AmqpOnPostgres) -> int:
    """How many commands of the outbox were not (yet) confirmed by RabbitMQ."""
    return amqp.integer("SELECT count(*) FROM saga_outbox WHERE sent_at IS NULL")


def commands(amqp: AmqpOnPostgres, saga_id: str) -> list[tuple[str, str, object]]:
    """``(step, kind, body)`` of the saga's commands in the outbox, in the order written."""
    rows = amqp.rows(
        "SELECT step, kind, body FROM saga_outbox WHERE saga_id = ? ORDER BY id", (saga_id,)
    )
    return [(str(step), str(kind), json.loads(str(body))) for step, kind, body in rows]


def replies(amqp: AmqpOnPostgres, saga_id: str) -> dict[str, object]:
    """``{name: outcome}`` of the saga's stored replies."""
    rows = amqp.rows(
        "SELECT name, payload->>'outcome' FROM saga_replies WHERE saga_id = ?", (saga_id,)
    )
    return {str(name): outcome for name, outcome in rows}


def assert_outbox_matches_the_attempts(amqp: AmqpOnPostgres) -> None:
    """One command per recorded attempt of each step, sent, and a reply to each kind sent.

    A command of a saga the store does not hold, or of an attempt whose record was
    refused (a stale fence), or an attempt recorded without its command, fails here.
    """
    assert unsent(amqp) == 0
    orphans = amqp.integer(
        "SELECT count(*) FROM saga_outbox AS o WHERE NOT EXISTS"
        " (SELECT 1 FROM saga_instances AS i WHERE i.saga_id = o.saga_id)"
    )
    assert orphans == 0
    mismatched = amqp.rows(
        "SELECT * FROM (SELECT s.saga_id, s.name, s.attempts, s.compensation_attempts,"
        "  count(o.id) FILTER (WHERE o.kind = ANY(?::text[])) AS commands,"
        "  count(o.id) FILTER (WHERE o.kind = ANY(?::text[])) AS undoings"
        "  FROM saga_steps AS s LEFT JOIN saga_outbox AS o"
        "   ON o.saga_id = s.saga_id AND o.step = s.name"
        "  GROUP BY s.saga_id, s.name, s.attempts, s.compensation_attempts) AS c"
        " WHERE attempts <> commands OR compensation_attempts <> undoings",
        (list(ACTIONS), list(UNDOINGS)),
    )
    assert mismatched == [], "(saga, step, attempts, undo attempts, commands, undo commands)"
    unanswered = amqp.rows(
        "SELECT DISTINCT o.saga_id, o.step || '.' || o.kind FROM saga_outbox AS o"
        " WHERE NOT EXISTS (SELECT 1 FROM saga_replies AS r"
        "  WHERE r.saga_id = o.saga_id AND r.name = o.step || '.' || o.kind)"
    )
    assert unanswered == []


def assert_every_order_ended_once(amqp: AmqpOnPostgres, orders: Sequence[str]) -> None:
    """Every saga ended, no order completed twice, every effect once, every command sent.

    Orders with a valid address (three in four) completed, once; the others were
    compensated after shipping refused them (more than once if checked out again).
    """
    assert amqp.active_sagas() == 0, amqp.statuses()
    sagas = amqp.rows("SELECT saga_id, business_key, status FROM saga_instances")
    assert {key for _, key, _ in sagas} == set(orders)
    assert {status for _, _, status in sagas} <= {"completed", "compensated"}
    completed = Counter(key for _, key, status in sagas if status == "completed")
    assert set(completed.values()) == {1}, "an order completed twice"
    assert len(completed) == len(orders) - len(orders) // 4
    amqp.assert_exactly_once(balance=BALANCE, stock=STOCK)
    assert_outbox_matches_the_attempts(amqp)
    # What each saga sent, whatever the retries: its actions, and its undoings if compensated.
    for saga_id, key, status in sagas:
        kinds = {kind for _, kind, _ in commands(amqp, str(saga_id))}
        expected = set(ACTIONS) if status == "completed" else {*ACTIONS, "refund", "release"}
        assert kinds == expected, (key, status, kinds)


async def finish(amqp: AmqpOnPostgres, server: ServeProcess, orders: Sequence[str]) -> None:
    """Check every order out again on ``server`` (starting those the dead one never got),
    then wait until every saga has ended and the relays have marked every command sent."""
    async with server.client() as client:
        assert set(await submit(client, orders)) <= {200, 202, 400}
    await amqp.wait_all_finished(60)
    await wait_until(lambda: unsent(amqp) == 0, timeout=10.0)


def active_owned_by(amqp: AmqpOnPostgres, process: ServeProcess) -> int:
    """How many running or compensating sagas ``process`` holds the lease of."""
    return amqp.integer(
        "SELECT count(*) FROM saga_instances WHERE status IN (?, ?) AND owner LIKE ?",
        (*ACTIVE, owned_by(process.pid)),
    )


async def test_demo_orders_with_the_sagas_and_the_outbox_in_postgresql(
    amqp_postgres: AmqpOnPostgres,
) -> None:
    """order1 completes, order2 is refused by payment, order3 by shipping (then undone)."""
    amqp = amqp_postgres
    server = await amqp.start()
    shop = Deployment("amqp-postgres", amqp, server)
    async with server.client() as client:
        answers = [await client.post(f"/checkout/order{n}") for n in (1, 2, 3)]
        order_statuses = [
            (await client.get(f"/orders/order{n}")).json()["status"] for n in (1, 2, 3)
        ]

    assert [a.status_code for a in answers] == [200, 400, 400], [a.text for a in answers]
    first, second, third = (str(a.json()["saga_id"]) for a in answers)
    assert answers[0].json()["status"] == "completed"
    assert (answers[1].json()["error"], answers[1].json()["failed_step"]) == (
        "Insufficient balance",
        "payment",
    )
    assert (answers[2].json()["error"], answers[2].json()["failed_step"]) == (
        "Invalid shipping address",
        "shipping",
    )
    assert order_statuses == ["completed", "failed", "failed"]
    # The sagas, in PostgreSQL (and no SQLite file for the checkout).
    assert not amqp.db_path.exists()
    assert amqp.rows(
        "SELECT saga_id, business_key, status, error, failed_step FROM saga_instances ORDER BY seq"
    ) == [
        (first, "order1", "completed", None, None),
        (second, "order2", "compensated", "Insufficient balance", "payment"),
        (third, "order3", "compensated", "Invalid shipping address", "shipping"),
    ]
    steps = amqp.rows(
        "SELECT saga_id, name, status, attempts, compensation_attempts FROM saga_steps"
        " ORDER BY saga_id, idx"
    )
    assert sorted(steps) == sorted(
        [
            (first, "payment", "succeeded", 1, 0),
            (first, "inventory", "succeeded", 1, 0),
            (first, "shipping", "succeeded", 1, 0),
            (second, "payment", "failed", 1, 0),
            (second, "inventory", "pending", 0, 0),
            (second, "shipping", "pending", 0, 0),
            (third, "payment", "compensated", 1, 1),
            (third, "inventory", "compensated", 1, 1),
            (third, "shipping", "failed", 1, 0),
        ]
    )
    # The commands each saga wrote to the outbox, in order, and the replies to them.
    assert commands(amqp, first) == [
        ("payment", "charge", {"user_id": "user1", "amount": 20, "attempt": 1}),
        ("inventory", "reserve", {"order_id": "order1", "lines": {"item1": 2}, "attempt": 1}),
        ("shipping", "ship", {"order_id": "order1", "address": "Some Street", "attempt": 1}),
    ]
    assert commands(amqp, second) == [
        ("payment", "charge", {"user_id": "user2", "amount": 10, "attempt": 1}),
    ]
    assert commands(amqp, third) == [
        ("payment", "charge", {"user_id": "user1", "amount": 10, "attempt": 1}),
        ("inventory", "reserve", {"order_id": "order3", "lines": {"item2": 1}, "attempt": 1}),
        ("shipping", "ship", {"order_id": "order3", "address": "", "attempt": 1}),
        ("inventory", "release", {"attempt": 1}),
        ("payment", "refund", {"attempt": 1}),
    ]
    ok_actions = {"payment.charge": "ok", "inventory.reserve": "ok", "shipping.ship": "ok"}
    assert replies(amqp, first) == ok_actions
    assert replies(amqp, second) == {"payment.charge": "refused"}
    assert replies(amqp, third) == {
        **ok_actions,
        "shipping.ship": "refused",
        "inventory.release": "ok",
        "payment.refund": "ok",
    }
    await wait_until(lambda: unsent(amqp) == 0, timeout=10.0)
    assert_outbox_matches_the_attempts(amqp)
    # The effects, each in its participant's own SQLite database.
    assert shop.payment(first) == ("user1", 20, "charged")
    assert shop.reservation(first) == ({"item1": 2}, "reserved")
    assert shop.shipment(first) == ("order1", "Some Street", "shipped")
    assert shop.payment(second) == ("user2", 10, "rejected")
    assert (shop.reservation(second), shop.shipment(second)) == (None, None)
    assert shop.payment(third) == ("user1", 10, "refunded")
    assert shop.reservation(third) == ({"item2": 1}, "released")
    assert shop.shipment(third) == ("order3", "", "rejected")
    assert (shop.balance("user1"), shop.balance("user2")) == (80, 5)
    assert (shop.stock("item1"), shop.stock("item2")) == (3, 3)
    amqp.assert_exactly_once(balance=105, stock=8)


async def test_orchestrator_killed_under_load_restarts_on_postgresql_and_sends_all_once(
    amqp_postgres: AmqpOnPostgres,
) -> None:
    """SIGKILL of ``sagakit serve`` mid-load, then a new one on the same database."""
    amqp = amqp_postgres
    server = await amqp.start()
    async with server.client() as client:
        orders = await create_orders(client, ORDERS)
        load = asyncio.create_task(submit(client, orders))
        await wait_until(lambda: recorded(amqp) >= 10)
        await server.kill()
        active_at_kill = amqp.active_sagas()
        await load

    assert active_at_kill > 0, "the kill came after the load"
    restarted = await amqp.serve()
    await finish(amqp, restarted, orders)
    assert_every_order_ended_once(amqp, orders)


async def test_two_orchestrators_on_postgresql_one_killed_under_load_the_other_finishes(
    amqp_postgres: AmqpOnPostgres,
) -> None:
    """Two ``sagakit serve`` on one database and one set of queues; one SIGKILLed mid-load.

    Both relay the outbox and consume the replies queue (a reply may reach the process
    that does not drive its saga: it is stored, and found there by the driver). The
    survivor takes the dead one's sagas over once their leases pass.
    """
    amqp = amqp_postgres
    doomed = await amqp.start()
    survivor = await amqp.serve()
    async with doomed.client() as to_doomed, survivor.client() as to_survivor:
        orders = await create_orders(to_doomed, ORDERS)
        loads = asyncio.gather(submit(to_doomed, orders[0::2]), submit(to_survivor, orders[1::2]))
        await wait_until(lambda: recorded(amqp) >= 10)
        await wait_until(lambda: active_owned_by(amqp, doomed) > 0, timeout=5.0)
        await doomed.kill()
        held_at_kill = {
            str(saga_id)
            for (saga_id,) in amqp.rows(
                "SELECT saga_id FROM saga_instances WHERE status IN (?, ?) AND owner LIKE ?",
                (*ACTIVE, owned_by(doomed.pid)),
            )
        }
        await loads

    assert held_at_kill, "the kill came after the load"
    await finish(amqp, survivor, orders)
    assert_every_order_ended_once(amqp, orders)
    # The survivor claimed the sagas the dead one held.
    claimed = {
        str(saga_id)
        for (saga_id,) in amqp.rows(
            "SELECT saga_id FROM saga_events WHERE type = 'saga_claimed' AND detail LIKE ?",
            (f"claimed by {owned_by(survivor.pid)}",),
        )
    }
    assert held_at_kill <= claimed, held_at_kill - claimed
    assert survivor.alive
