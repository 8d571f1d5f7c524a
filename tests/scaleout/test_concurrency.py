"""Concurrent checkouts through several API processes on one PostgreSQL database.

The requests are sent at once from one asyncio client, alternating between two ports; the
effects are counted in the participants' tables.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from tests.processes import PATIENT, create_buyers
from tests.scaleout.conftest import Cluster


async def test_fifty_checkouts_of_one_order_through_two_processes_share_one_saga_and_one_charge(
    cluster: Cluster,
) -> None:
    """Fifty simultaneous checkouts of order1 on two serves answer 200 with one saga, one charge."""
    first = await cluster.serve()
    second = await cluster.serve()
    await cluster.connection()  # the test's own, before the pools take every free slot
    # A checkout takes milliseconds; a process that answers nothing in 15 s is stuck.
    async with first.client(timeout=15.0) as one, second.client(timeout=15.0) as two:
        answers = await asyncio.gather(
            *(client.post("/checkout/order1") for client in [one, two] * 25),
            return_exceptions=True,
        )

    outcomes = Counter(a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers)
    sagas = await cluster.fetch(
        "SELECT saga_id, status, fence, owner, lease_until,"
        " extract(epoch FROM clock_timestamp())::float8 AS now FROM saga_instances"
    )
    assert outcomes == {200: 50}, f"answers {dict(outcomes)}; sagas {[dict(s) for s in sagas]}"
    saga_ids = {a.json()["saga_id"] for a in answers if isinstance(a, httpx.Response)}
    assert saga_ids == set(await cluster.saga_ids("order1"))
    [saga_id] = saga_ids
    payments = await cluster.fetch("SELECT idempotency_key, status FROM payments")
    assert [tuple(p) for p in payments] == [(f"{saga_id}:payment", "charged")]
    shipped = "SELECT count(*) FROM shipments WHERE status = 'shipped'"
    assert await cluster.integer(shipped) == 1
    assert await cluster.balance("user1") == 100 - 20
    assert await cluster.stock("item1") == 5 - 2


async def test_hundred_buyers_of_ten_through_three_processes_leave_ten_served_ninety_refused(
    cluster: Cluster,
) -> None:
    """A hundred buyers of ten units on three API processes: ten served, ninety told no stock."""
    pair = await cluster.serve(
        workers=2, env={**PATIENT, "PROMETHEUS_MULTIPROC_DIR": str(cluster.tmp / "metrics")}
    )
    single = await cluster.serve(env=PATIENT)
    # The test's reading connection, opened before the load: the server's max_connections
    # is shared with other suites, and the three pools may then hold every free slot.
    await cluster.connection()
    async with pair.client() as setup:
        users = await create_buyers(setup, 100, balance=50)
    # Fresh connections for the checkouts: one the setup left idle for the server's
    # keep-alive (5 s, on a loaded machine) could be closed just as a checkout is sent on it.
    async with pair.client() as one, single.client() as two:
        answers = await asyncio.gather(
            *(
                client.post(f"/checkout/order-{u}")
                for client, u in zip([one, two] * 50, users, strict=True)
            )
        )

    assert Counter(a.status_code for a in answers) == {200: 10, 400: 90}, [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 400:
            body = answer.json()
            refusal = (body["status"], body["error"], body["failed_step"])
            assert refusal == ("compensated", "Not enough stock", "inventory")
    assert await cluster.stock("hot") == 0
    winners = {a.json()["order_id"].removeprefix("order-") for a in answers if a.status_code == 200}
    for user in users:
        [saga_id] = await cluster.saga_ids(f"order-{user}")
        payment = await cluster.fetch(
            "SELECT status, amount FROM payments WHERE idempotency_key = $1", f"{saga_id}:payment"
        )
        expected = (40, [("charged", 10)]) if user in winners else (50, [("refunded", 10)])
        assert (await cluster.balance(user), [tuple(p) for p in payment]) == expected, user
    reserved = "SELECT count(*) FROM reservations WHERE status = 'reserved'"
    assert await cluster.integer(reserved) == 10
