"""Zombies: a ``sagakit serve`` paused (SIGSTOP) in the middle of a step, resumed later.

The test holds the buyer's row (``SELECT ... FOR UPDATE``), so the paused process's payment
waits inside its own transaction, with its payment row inserted but not committed. Its
lease runs out; a ``sagakit worker`` claims the saga (the fence goes to 2) and replays the
payment with the same idempotency key, which waits for the paused transaction. What
happens next depends on whether that transaction outlives the pause. Each test runs with
local steps (the effect commits with the step's fenced record) and with separate commits
(the effect commits first, as a remote participant's would).
"""

from __future__ import annotations

import asyncio
import functools
import signal
from collections.abc import Sequence
from typing import Final

import pytest

from tests.processes import SagakitProcess, ServeProcess, eventually
from tests.scaleout.conftest import (
    LEASE_SECONDS,
    Cluster,
    RowLock,
    blocked_by,
    first_blocked_by,
)

#: The history a checkout of order1 has when the worker took it over in its payment step
#: and nobody else wrote: any write of the paused process would add or change a line.
TAKEN_OVER: Final = [
    ("saga_started", "payment", 1),
    ("saga_claimed", None, None),
    ("step_started", "payment", 2),
    ("step_succeeded", "payment", 2),
    ("step_started", "inventory", 1),
    ("step_succeeded", "inventory", 1),
    ("step_started", "shipping", 1),
    ("step_succeeded", "shipping", 1),
    ("saga_completed", None, None),
]
#: PostgreSQL ends a session left idle inside a transaction after this long (milliseconds).
IDLE_TIMEOUT_MS: Final = 1000
#: SAGAKIT_LOCAL_STEPS for each mode.
MODES: Final = {"local-steps": "true", "separate-commits": "false"}


async def history(cluster: Cluster, saga_id: str) -> list[tuple[str, str | None, int | None]]:
    """The saga's events as (type, step, attempt), in order."""
    rows = await cluster.fetch(
        "SELECT type, step, attempt FROM saga_events WHERE saga_id = $1 ORDER BY id", saga_id
    )
    return [(row["type"], row["step"], row["attempt"]) for row in rows]


async def status(cluster: Cluster, saga_id: str, wanted: Sequence[str]) -> str | None:
    """The saga's status if it is one of ``wanted``, else ``None``."""
    [row] = await cluster.fetch("SELECT status FROM saga_instances WHERE saga_id = $1", saga_id)
    found: str = row["status"]
    return found if found in wanted else None


async def backend_state(cluster: Cluster, backend: int) -> str:
    """The state of a server process (``active``, ``idle in transaction``, ...) or ``gone``."""
    rows = await cluster.fetch("SELECT state FROM pg_stat_activity WHERE pid = $1", backend)
    return str(rows[0]["state"]) if rows else "gone"


async def pause_mid_payment(
    cluster: Cluster, zombie: ServeProcess, worker: SagakitProcess, lock: RowLock
) -> tuple[str, int, int]:
    """Start order1's checkout on ``zombie``, SIGSTOP it in payment, let ``worker`` claim it.

    Returns the saga's id, the zombie's server process (holding its payment transaction)
    and the worker's, which waits for that transaction.
    """
    async with zombie.client() as client:
        answer = await client.post("/checkout/order1", params={"wait": "false"})
    assert answer.status_code == 202, answer.text
    saga_id = answer.json()["saga_id"]
    zombie_backend = await first_blocked_by(cluster, lock.backend, "the payment waits")
    zombie.signal(signal.SIGSTOP)
    # Its lease lapses; the worker claims the saga and replays the payment, same key.
    worker_backend = await first_blocked_by(cluster, zombie_backend, "the replay waits")
    claims = [e for e in await cluster.events(saga_id) if e["type"] == "saga_claimed"]
    assert [f":{worker.pid}:" in str(e["detail"]) for e in claims] == [True], claims
    assert await cluster.fence(saga_id) == 2
    return saga_id, zombie_backend, worker_backend


async def assert_charged_once(cluster: Cluster, saga_id: str) -> None:
    """One payment, charged; user1 debited 20 once; item1's stock down by 2."""
    payments = await cluster.fetch("SELECT idempotency_key, status, amount FROM payments")
    assert [tuple(p) for p in payments] == [(f"{saga_id}:payment", "charged", 20)]
    assert await cluster.balance("user1") == 100 - 20
    assert await cluster.stock("item1") == 5 - 2


@pytest.mark.parametrize("mode", list(MODES))
async def test_a_paused_serve_resumed_after_the_takeover_records_nothing_more(
    cluster: Cluster, mode: str
) -> None:
    """A serve paused mid-payment, whose transaction the server ends, writes nothing on resuming."""
    env = {"SAGAKIT_LOCAL_STEPS": MODES[mode]}
    idle_limit = f"?idle_in_transaction_session_timeout={IDLE_TIMEOUT_MS}"
    zombie = await cluster.serve(env=env, database_url=cluster.database_url + idle_limit)
    worker = await cluster.worker(env=env)
    async with RowLock(cluster.database_url, "user1") as lock:
        saga_id, zombie_backend, _ = await pause_mid_payment(cluster, zombie, worker, lock)
        await lock.release()
        # The zombie's debit goes through, then its session idles in its transaction until
        # the server ends it, rolling the payment back: the worker's replay goes on alone.
        ended = functools.partial(status, cluster, saga_id, ["completed", "compensated"])
        assert await eventually(ended, timeout=15.0, what="the worker ends it") == "completed"
    assert await backend_state(cluster, zombie_backend) == "gone"
    before = (await history(cluster, saga_id), await cluster.fence(saga_id))

    zombie.signal(signal.SIGCONT)
    await zombie.wait_logged(f"saga {saga_id}: lease lost", timeout=10.0)
    await zombie.wait_healthy()

    assert before == (TAKEN_OVER, 2)
    assert (await history(cluster, saga_id), await cluster.fence(saga_id)) == before
    await assert_charged_once(cluster, saga_id)


@pytest.mark.parametrize("mode", list(MODES))
async def test_a_paused_serve_holding_its_payment_transaction_holds_the_takeover_until_resumed(
    cluster: Cluster, mode: str
) -> None:
    """A serve paused inside its payment transaction stalls the taker-over, then charges once."""
    env = {"SAGAKIT_LOCAL_STEPS": MODES[mode]}
    zombie = await cluster.serve(env=env)
    worker = await cluster.worker(env=env)
    async with RowLock(cluster.database_url, "user1") as lock:
        saga_id, zombie_backend, worker_backend = await pause_mid_payment(
            cluster, zombie, worker, lock
        )
        await lock.release()
    # The zombie's debit is done but not committed; nothing ends its transaction.
    idle = functools.partial(backend_state, cluster, zombie_backend)

    async def idling() -> bool | None:
        return True if await idle() == "idle in transaction" else None

    await eventually(idling, timeout=10.0, what="the zombie's session idles in its transaction")
    await asyncio.sleep(2 * LEASE_SECONDS)  # two whole leases: the worker still waits
    assert await blocked_by(cluster, zombie_backend) == [worker_backend]
    assert await status(cluster, saga_id, ["running"]) == "running"

    zombie.signal(signal.SIGCONT)
    ended = functools.partial(status, cluster, saga_id, ["completed", "compensated"])
    assert await eventually(ended, timeout=15.0, what="the worker ends it") == "completed"
    await zombie.wait_logged(f"saga {saga_id}: lease lost", timeout=10.0)

    # Local steps: the zombie's "payment succeeded" (attempt 1) is refused by the fence and
    # its debit rolls back with it; the worker's replay then charges. Separate commits: the
    # zombie's charge commits late, the worker's replay finds it by its key, and the
    # zombie's "payment succeeded" is refused. Either way: one charge, the worker's history.
    assert await history(cluster, saga_id) == TAKEN_OVER
    assert await cluster.fence(saga_id) == 2
    await assert_charged_once(cluster, saga_id)
