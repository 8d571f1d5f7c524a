"""Faults in the distributed checkout: processes killed under load, slow and lost replies.

Afterwards every saga has finished, money and stock are conserved across the services'
separate databases, and each completed saga's effects exist exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence

import httpx
import pytest

from sagakit.api.participants import KINDS, Kind
from tests.distributed.conftest import BALANCE, STOCK, Distributed, create_orders
from tests.recovery.conftest import wait_saga_finished


async def submit(client: httpx.AsyncClient, orders: Sequence[str]) -> list[int]:
    """Check every order out at once without waiting; the statuses (0: no answer)."""

    async def one(order: str) -> int:
        try:
            return (await client.post(f"/checkout/{order}?wait=false")).status_code
        except httpx.TransportError:
            return 0

    return list(await asyncio.gather(*(one(order) for order in orders)))


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Return once ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s")
        await asyncio.sleep(0.01)


def recorded(distributed: Distributed) -> int:
    """How many checkout sagas the checkout service has recorded."""
    return distributed.integer("SELECT count(*) FROM saga_instances")


@pytest.mark.parametrize("kind", KINDS)
async def test_participant_killed_under_load_leaves_every_effect_exactly_once(
    distributed: Distributed, kind: Kind
) -> None:
    """SIGKILL of one participant mid-load, then its restart: every saga ends, nothing lost."""
    server = await distributed.start()
    async with server.client() as client:
        orders = await create_orders(client, 60)
        load = asyncio.create_task(submit(client, orders), name="load")
        await wait_until(lambda: recorded(distributed) >= 15)
        await distributed.participants[kind].kill()
        active_at_kill = distributed.active_sagas()
        await asyncio.sleep(0.5)
        await distributed.participant(kind)
        statuses = await load
        await distributed.wait_all_finished()

    assert set(statuses) == {202}
    assert active_at_kill > 0
    sagas = distributed.rows("SELECT business_key, status FROM saga_instances")
    # An order whose saga was compensated before the re-submission (a blank address) is
    # checked out again by it, as the contract allows: it may have two compensated sagas.
    assert {key for key, _ in sagas} == set(orders)
    assert {status for _, status in sagas} <= {"completed", "compensated"}
    completed = Counter(key for key, status in sagas if status == "completed")
    assert set(completed.values()) == {1}, "an order completed twice"
    distributed.assert_exactly_once(balance=BALANCE, stock=STOCK)


async def test_orchestrator_killed_under_load_is_taken_over_and_effects_stay_exactly_once(
    distributed: Distributed,
) -> None:
    """SIGKILL of ``sagakit serve`` mid-load: a new one finishes every saga, each effect once."""
    server = await distributed.start()
    async with server.client() as client:
        orders = await create_orders(client, 60)
        load = asyncio.create_task(submit(client, orders), name="load")
        await wait_until(lambda: recorded(distributed) >= 15)
        await server.kill()
        active_at_kill = distributed.active_sagas()
        await load
    restarted = await distributed.serve()
    async with restarted.client() as client:
        # Orders whose checkout never reached the dead process are checked out now.
        assert set(await submit(client, orders)) <= {200, 202, 400}
        await distributed.wait_all_finished()

    assert active_at_kill > 0
    sagas = distributed.rows("SELECT business_key, status FROM saga_instances")
    # An order whose saga was compensated before the re-submission (a blank address) is
    # checked out again by it, as the contract allows: it may have two compensated sagas.
    assert {key for key, _ in sagas} == set(orders)
    assert {status for _, status in sagas} <= {"completed", "compensated"}
    completed = Counter(key for key, status in sagas if status == "completed")
    assert set(completed.values()) == {1}, "an order completed twice"
    distributed.assert_exactly_once(balance=BALANCE, stock=STOCK)


async def test_orchestrator_killed_after_a_remote_effect_replays_it_without_a_second_charge(
    distributed: Distributed,
) -> None:
    """Killed after payment applied but before its result was recorded, order1 pays once."""
    await asyncio.gather(*(distributed.participant(kind) for kind in KINDS))
    server = await distributed.serve(crash_at="after_do:payment")
    async with server.client() as client:
        with pytest.raises(httpx.TransportError):
            await client.post("/checkout/order1")
    await server.wait(10.0)
    saga_id = await distributed.wait_for_saga("order1")
    restarted = await distributed.serve()
    async with restarted.client() as client:
        saga = await wait_saga_finished(client, saga_id)

    assert saga["status"] == "completed"
    assert distributed.rows_of("payment", "SELECT status, amount FROM payments") == [
        ("charged", 20)
    ]
    distributed.assert_exactly_once(balance=105, stock=8)


async def test_slow_participant_past_the_timeout_is_retried_and_charges_once(
    distributed: Distributed,
) -> None:
    """Each key's first charge sleeps past the step timeout; the retry completes, once."""
    for kind in KINDS:
        env = {"SAGAKIT_PARTICIPANT_SLOW_SECONDS": "1.5"} if kind == "payment" else {}
        await distributed.participant(kind, env=env)
    server = await distributed.serve(env={"SAGAKIT_PARTICIPANT_TIMEOUT_SECONDS": "0.5"})
    async with server.client() as client:
        orders = await create_orders(client, 12)
        answers = await asyncio.gather(*(client.post(f"/checkout/{o}") for o in orders))
        first = (await client.get(f"/sagas/{answers[0].json()['saga_id']}")).json()
        # The first, slow, attempts wake up after the retries and find their keys done.
        await asyncio.sleep(1.5)

    assert sorted(a.status_code for a in answers) == [200] * 9 + [400] * 3
    payment = next(s for s in first["steps"] if s["name"] == "payment")
    assert payment["attempts"] >= 2
    distributed.assert_exactly_once(balance=BALANCE, stock=STOCK)


async def test_lost_replies_are_retried_and_every_effect_applies_once(
    distributed: Distributed,
) -> None:
    """Every participant drops its first reply to each key after applying the effect."""
    server = await distributed.start(participant_env={"SAGAKIT_PARTICIPANT_DROP_REPLIES": "true"})
    async with server.client() as client:
        orders = await create_orders(client, 12)
        answers = await asyncio.gather(*(client.post(f"/checkout/{o}") for o in orders))
        first = (await client.get(f"/sagas/{answers[0].json()['saga_id']}")).json()

    assert sorted(a.status_code for a in answers) == [200] * 9 + [400] * 3
    assert [s["attempts"] for s in first["steps"]] == [2, 2, 2]
    distributed.assert_exactly_once(balance=BALANCE, stock=STOCK)
