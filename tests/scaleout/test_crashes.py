"""Crashes at scale: two API processes and a worker on one PostgreSQL database, SIGKILLed.

Checkouts arrive at both API processes while one process at a time is killed at a random
moment (a seeded random, so a run can be replayed) and restarted. Afterwards every saga
must have ended, and money, stock and each order's effects must add up exactly.
"""

from __future__ import annotations

import asyncio
import functools
import random
import statistics
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import httpx
import pytest

from tests.processes import ADMIN_HEADERS, SagakitProcess, eventually
from tests.scaleout.conftest import (
    LEASE_SECONDS,
    POLL_SECONDS,
    Cluster,
    RowLock,
    first_blocked_by,
    owned_by,
)
from tests.scaleout.test_stalls import Database, history_breaches

SEED: Final = 2
#: How long processes are killed for; the checkouts arrive over the same span.
CHAOS_SECONDS: Final = 15.0
MAX_KILLS: Final = 6
WIDGET_STOCK: Final = 10_000
SCARCE_STOCK: Final = 10
#: The refusal (error, failed step) each kind of doomed order must end with.
REFUSALS: Final = {
    "poor": ("Insufficient balance", "payment"),
    "scarce": ("Not enough stock", "inventory"),
    "noaddr": ("Invalid shipping address", "shipping"),
}
#: SAGAKIT_LOCAL_STEPS: each effect commits with its step's record (the default), or on its
#: own first, as a remote participant's would; "one-unit": the whole checkout in one commit.
MODES: Final = {"local-steps": "true", "separate-commits": "false", "one-unit": "true"}
ORPHANS: Final = (
    "SELECT saga_id FROM saga_instances"
    " WHERE owner LIKE $1 AND status IN ('running', 'compensating')"
)


@dataclass(frozen=True, slots=True)
class Order:
    """An order to create, and what kind of ending it must have."""

    order_id: str
    user_id: str
    balance: int
    items: dict[str, int]
    address: str
    kind: str  # "ok" completes; the others end as REFUSALS says ("scarce": all but ten)


def plan_orders(rng: random.Random) -> list[Order]:
    """490 orders in a seeded order: most complete; some lack money, stock or an address."""
    orders = [
        Order(f"ok-{i:03d}", f"buyer-{i:03d}", 1000, {"widget": rng.randint(1, 3)}, "1 Road", "ok")
        for i in range(420)
    ]
    orders += [
        Order(f"poor-{i:02d}", f"pauper-{i:02d}", 5, {"widget": 1}, "2 Road", "poor")
        for i in range(20)
    ]
    orders += [
        Order(
            f"noaddr-{i:02d}",
            f"drifter-{i:02d}",
            1000,
            {"widget": 2},
            rng.choice(["", " "]),
            "noaddr",
        )
        for i in range(20)
    ]
    orders += [
        Order(f"scarce-{i:02d}", f"hunter-{i:02d}", 1000, {"scarce": 1}, "3 Road", "scarce")
        for i in range(30)
    ]
    rng.shuffle(orders)
    return orders


async def create_shop(clients: list[httpx.AsyncClient], orders: list[Order]) -> None:
    """Create the items, then every user and order, through both API processes at once."""
    for item_id, stock in (("widget", WIDGET_STOCK), ("scarce", SCARCE_STOCK)):
        item = {"item_id": item_id, "stock": stock, "price": 10}
        answer = await clients[0].post("/items", json=item, headers=ADMIN_HEADERS)
        assert answer.status_code == 201, answer.text
    room = asyncio.Semaphore(32)

    async def create(n: int, path: str, body: Mapping[str, object]) -> None:
        async with room:
            answer = await clients[n % 2].post(path, json=body, headers=ADMIN_HEADERS)
        assert answer.status_code == 201, answer.text

    users = [{"user_id": o.user_id, "balance": o.balance} for o in orders]
    await asyncio.gather(*(create(n, "/users", body) for n, body in enumerate(users)))
    bodies = [
        {"order_id": o.order_id, "user_id": o.user_id, "items": o.items, "address": o.address}
        for o in orders
    ]
    await asyncio.gather(*(create(n, "/orders", body) for n, body in enumerate(bodies)))


# -- the load and the kills ---------------------------------------------------------------


@dataclass
class Load:
    """What the checkouts sent during the run were answered."""

    sent: int = 0
    answers: Counter[int] = field(default_factory=Counter)
    #: Checkouts cut by a kill (or sent to a dead process) and sent again to the other one.
    resent: int = 0
    unanswered: int = 0
    problems: list[str] = field(default_factory=list)

    def judge(self, order: Order, answer: httpx.Response) -> None:
        """Record an answer, and a problem if the order's kind forbids it."""
        self.answers[answer.status_code] += 1
        if answer.status_code == 202:
            return
        body = answer.json()
        if answer.status_code == 200 and order.kind in ("ok", "scarce"):
            return
        refusal = (body.get("error"), body.get("failed_step"))
        if answer.status_code == 400 and order.kind != "ok" and refusal == REFUSALS[order.kind]:
            return
        self.problems.append(f"{order.order_id} ({order.kind}) answered {answer.text}")


async def checkout(
    clients: list[httpx.AsyncClient], order: Order, first: int, wait: bool, load: Load
) -> None:
    """Check ``order`` out; a cut connection is sent again to the other API process."""
    load.sent += 1
    for n in range(4):
        try:
            answer = await clients[(first + n) % 2].post(
                f"/checkout/{order.order_id}", params={"wait": str(wait).lower()}
            )
        except httpx.TransportError:
            load.resent += 1
            await asyncio.sleep(0.1)
            continue
        load.judge(order, answer)
        return
    load.unanswered += 1


async def send_load(
    clients: list[httpx.AsyncClient], orders: list[Order], rng: random.Random, load: Load
) -> None:
    """Send the checkouts spread over the run: a third without waiting, some twice at once."""
    spacing = (CHAOS_SECONDS - 2.0) / len(orders)
    async with asyncio.TaskGroup() as group:
        for order in orders:
            first, wait = rng.randrange(2), rng.random() >= 1 / 3
            group.create_task(checkout(clients, order, first, wait, load), name=order.order_id)
            if rng.random() < 0.15:  # the same order at the other process, at the same time
                group.create_task(
                    checkout(clients, order, 1 - first, True, load), name=f"{order.order_id}-2"
                )
            await asyncio.sleep(spacing)


@dataclass(frozen=True, slots=True)
class Kill:
    """One SIGKILL: of which process, when, and the sagas it left mid-flight."""

    target: str
    pid: int
    at: float
    orphans: tuple[str, ...]


async def busy(cluster: Cluster, process: SagakitProcess, *, within: float) -> None:
    """Return as soon as ``process`` drives a saga, or after ``within`` seconds anyway."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await cluster.fetch(ORPHANS, owned_by(process.pid)):
            return
        await asyncio.sleep(0.005)


async def kill_one_at_a_time(
    cluster: Cluster, processes: dict[str, SagakitProcess], rng: random.Random
) -> list[Kill]:
    """SIGKILL a random process at random moments, restarting each before the next kill.

    After its random pause the killer waits (a second at most) for the victim to be driving
    a saga, so that most kills of an API process cut sagas mid-flight.
    """
    kills: list[Kill] = []
    deadline = time.monotonic() + CHAOS_SECONDS
    while len(kills) < MAX_KILLS:
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        if time.monotonic() > deadline:
            break
        target = rng.choice(sorted(processes))
        victim = processes[target]
        await busy(cluster, victim, within=1.0)
        at = await victim.kill()
        orphans = tuple(r["saga_id"] for r in await cluster.fetch(ORPHANS, owned_by(victim.pid)))
        kills.append(Kill(target, victim.pid, at, orphans))
        processes[target] = await cluster.restart(victim)
    return kills


async def pickup_seconds(cluster: Cluster, kills: list[Kill]) -> list[float]:
    """For each saga a kill left mid-flight: seconds from the SIGKILL to its claim by another."""
    delays = []
    for kill in kills:
        for saga_id in kill.orphans:
            claims = [
                e
                for e in await cluster.events(saga_id)
                if e["type"] == "saga_claimed" and e["at"] >= kill.at
            ]
            # None only if the dead process's last write was already on its way and ended it.
            if claims:
                assert f":{kill.pid}:" not in claims[0]["detail"], claims[0]
                delays.append(claims[0]["at"] - kill.at)
    return delays


# -- the checks ---------------------------------------------------------------------------

SAGA_EFFECTS: Final = """
SELECT s.saga_id, s.business_key, s.status, s.error, s.failed_step,
       p.status AS payment, r.status AS reservation, h.status AS shipment
FROM saga_instances s
LEFT JOIN payments p ON p.idempotency_key = s.saga_id || ':payment'
LEFT JOIN reservations r ON r.idempotency_key = s.saga_id || ':inventory'
LEFT JOIN shipments h ON h.idempotency_key = s.saga_id || ':shipping'
ORDER BY s.seq
"""
STRAY_EFFECTS: Final = """
SELECT idempotency_key FROM payments WHERE status = 'charged'
UNION ALL SELECT idempotency_key FROM reservations WHERE status = 'reserved'
UNION ALL SELECT idempotency_key FROM shipments WHERE status = 'shipped'
EXCEPT SELECT saga_id || ':' || step FROM saga_instances,
       unnest(ARRAY['payment', 'inventory', 'shipping']) AS step WHERE status = 'completed'
"""
LEDGER: Final = """
SELECT (SELECT sum(balance) FROM users) AS balance, (SELECT sum(stock) FROM items) AS stock,
       (SELECT coalesce(sum(amount), 0) FROM payments WHERE status = 'charged') AS charged,
       (SELECT coalesce(sum(q::bigint), 0) FROM reservations, jsonb_each_text(lines) AS l(i, q)
         WHERE status = 'reserved') AS reserved
"""


async def ledger(cluster: Cluster) -> tuple[int, int, int, int]:
    """Total balance, total stock, sum of charged payments, units held by reservations."""
    [row] = await cluster.fetch(LEDGER)
    return row["balance"], row["stock"], row["charged"], row["reserved"]


def effects_violations(sagas: list[dict[str, str | None]]) -> list[str]:
    """Sagas whose participants' records disagree with how the saga ended."""
    violations = []
    applied = ("charged", "reserved", "shipped")
    for saga in sagas:
        effects = (saga["payment"], saga["reservation"], saga["shipment"])
        if saga["status"] == "completed" and effects != applied:
            violations.append(f"completed saga {saga['saga_id']} has effects {effects}")
        if saga["status"] != "completed" and set(effects) & set(applied):
            violations.append(f"{saga['status']} saga {saga['saga_id']} left {effects} applied")
    return violations


def outcome_violations(orders: list[Order], sagas: list[dict[str, str | None]]) -> list[str]:
    """Orders that ended otherwise than their kind says, or completed twice."""
    by_order: dict[str, list[dict[str, str | None]]] = {}
    for saga in sagas:
        by_order.setdefault(str(saga["business_key"]), []).append(saga)
    violations = []
    scarce_sold = 0
    for order in orders:
        mine = by_order.get(order.order_id, [])
        completed = sum(s["status"] == "completed" for s in mine)
        if not mine or completed > 1:
            violations.append(f"{order.order_id} has {len(mine)} sagas, {completed} completed")
            continue
        latest = mine[-1]
        if order.kind == "scarce" and latest["status"] == "completed":
            scarce_sold += 1
        elif order.kind == "ok" and latest["status"] != "completed":
            violations.append(f"{order.order_id} ended {latest['status']}: {latest['error']}")
        elif (
            order.kind != "ok" and (latest["error"], latest["failed_step"]) != REFUSALS[order.kind]
        ):
            violations.append(f"{order.order_id} ({order.kind}) ended {dict(latest)}")
    if scarce_sold != SCARCE_STOCK:
        violations.append(f"{scarce_sold} scarce orders completed, for a stock of {SCARCE_STOCK}")
    return violations


async def violations(
    cluster: Cluster, orders: list[Order], initial: tuple[int, int, int, int]
) -> tuple[list[str], list[dict[str, str | None]]]:
    """Everything that does not add up after the run, and every saga's row with its effects."""
    found: list[str] = []
    statuses = await cluster.statuses()
    if set(statuses) - {"completed", "compensated"}:
        found.append(f"sagas not ended well: {statuses}")
    balance, stock, charged, reserved = await ledger(cluster)
    if initial[0] != balance + charged:
        found.append(f"money: {initial[0]} at first, now {balance} + {charged} charged")
    if initial[1] != stock + reserved:
        found.append(f"stock: {initial[1]} at first, now {stock} + {reserved} reserved")
    sagas = [dict(r) for r in await cluster.fetch(SAGA_EFFECTS)]
    found += effects_violations(sagas)
    found += outcome_violations(orders, sagas)
    found += [
        f"effect without a completed saga: {r[0]}" for r in await cluster.fetch(STRAY_EFFECTS)
    ]
    found += await history_breaches(Database(cluster.database_url))
    return found, sagas


# -- the test -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
async def test_killing_processes_under_load_loses_and_duplicates_no_effect(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    """Checkouts through two APIs and a worker SIGKILLed in turn all end, conserving everything."""
    # One stream each, so that changing the orders does not change the kills.
    orders = plan_orders(random.Random(SEED))
    load_rng, kill_rng = random.Random(SEED + 1), random.Random(SEED + 2)
    env = {
        "SAGAKIT_DEMO_DATA": "false",
        "SAGAKIT_LOCAL_STEPS": MODES[mode],
        "SAGAKIT_ONE_UNIT": str(mode == "one-unit").lower(),
    }
    api_a = await cluster.serve(env=env)
    api_b = await cluster.serve(env=env)
    processes: dict[str, SagakitProcess] = {
        "api-a": api_a,
        "api-b": api_b,
        "worker": await cluster.worker(env=env),
    }
    load = Load()
    async with api_a.client(30.0) as client_a, api_b.client(30.0) as client_b:
        clients = [client_a, client_b]
        await create_shop(clients, orders)
        initial = await ledger(cluster)
        started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            group.create_task(send_load(clients, orders, load_rng, load), name="load")
            killing = group.create_task(
                kill_one_at_a_time(cluster, processes, kill_rng), name="kill"
            )
        chaos = time.monotonic() - started
        kills = killing.result()
        for order in orders:  # checkouts that no process answered: once more, in calm
            if not await cluster.saga_ids(order.order_id):
                await checkout(clients, order, 0, True, load)
    await cluster.wait_all_finished(timeout=60.0)

    found, sagas = await violations(cluster, orders, initial)
    found += load.problems
    pickups = await pickup_seconds(cluster, kills)
    report(capsys, mode, kills, chaos, load, sagas, pickups, found)
    assert not found, "\n".join(found)
    assert len(kills) >= 3, kills
    if mode == "one-unit":
        return  # a checkout commits whole or not at all: no kill leaves one mid-flight
    assert sum(len(k.orphans) for k in kills) > 0, "no kill caught a saga mid-flight"
    assert pickups, "no saga left by a kill was claimed by another process"
    assert max(pickups) <= LEASE_SECONDS + POLL_SECONDS + 2.0, pickups


def report(
    capsys: pytest.CaptureFixture[str],
    mode: str,
    kills: list[Kill],
    chaos: float,
    load: Load,
    sagas: list[dict[str, str | None]],
    pickups: list[float],
    found: list[str],
) -> None:
    """Print the run's figures, even when pytest captures output."""
    statuses = Counter(s["status"] for s in sagas)
    targets = Counter(k.target for k in kills)
    orphans = sum(len(k.orphans) for k in kills)
    lines = [
        f"scale-out crash run ({mode}): seed {SEED}, lease {LEASE_SECONDS}s, poll {POLL_SECONDS}s",
        f"  kills: {len(kills)} in {chaos:.1f}s ({dict(sorted(targets.items()))})",
        f"  checkouts: {load.sent} sent, {load.resent} re-sent after a cut,"
        f" {load.unanswered} unanswered, answers {dict(sorted(load.answers.items()))}",
        f"  sagas: {len(sagas)}, completed {statuses['completed']},"
        f" compensated {statuses['compensated']},"
        f" other {len(sagas) - statuses['completed'] - statuses['compensated']}"
        f" — left mid-flight by a kill {orphans}, claimed after it {len(pickups)}",
    ]
    if pickups:
        lines.append(
            f"  SIGKILL to saga_claimed: min {min(pickups):.2f}s,"
            f" median {statistics.median(pickups):.2f}s, max {max(pickups):.2f}s"
        )
    lines.append(f"  violations: {len(found)}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))


# -- how long a dead process's saga waits ------------------------------------------------

TAKEOVER_ROUNDS: Final = 3


async def saga_ended(cluster: Cluster, saga_id: str) -> str | None:
    """The saga's status once it has ended, else ``None``."""
    [row] = await cluster.fetch("SELECT status FROM saga_instances WHERE saga_id = $1", saga_id)
    status: str = row["status"]
    return None if status in ("running", "compensating") else status


async def killed_mid_payment(
    cluster: Cluster, order_id: str, pause: float
) -> tuple[str, float, float]:
    """Kill a serve ``pause`` seconds into its checkout of a new ``order_id``, in payment.

    Returns the saga's id, the time of the SIGKILL and the saga's lease at that moment.
    """
    doomed = await cluster.serve()
    order = {"order_id": order_id, "user_id": "user1", "items": {"item1": 1}, "address": "1 Road"}
    async with doomed.client() as client:
        created = await client.post("/orders", json=order, headers=ADMIN_HEADERS)
        assert created.status_code == 201, created.text
    async with RowLock(cluster.database_url, "user1") as lock, doomed.client() as client:
        answer = await client.post(f"/checkout/{order_id}", params={"wait": "false"})
        assert answer.status_code == 202, answer.text
        saga_id = answer.json()["saga_id"]
        await first_blocked_by(cluster, lock.backend, "the payment waits for the row")
        await asyncio.sleep(pause)  # renewals every lease/3: the lease left varies with it
        killed_at = await doomed.kill()
    [row] = await cluster.fetch(
        "SELECT lease_until FROM saga_instances WHERE saga_id = $1", saga_id
    )
    return saga_id, killed_at, row["lease_until"]


async def test_saga_of_a_killed_serve_is_claimed_after_its_lease_within_lease_plus_poll(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """A saga whose serve is SIGKILLed mid-step is claimed by the worker after lease and poll."""
    worker = await cluster.worker()
    rounds = []
    for n in range(TAKEOVER_ROUNDS):
        saga_id, killed_at, lease_until = await killed_mid_payment(
            cluster, f"takeover-{n}", pause=n * 0.25
        )
        status = await eventually(
            functools.partial(saga_ended, cluster, saga_id), timeout=10.0, what="the saga ended"
        )
        claims = [e for e in await cluster.events(saga_id) if e["type"] == "saga_claimed"]
        assert status == "completed"
        assert len(claims) == 1, claims
        assert f":{worker.pid}:" in claims[0]["detail"], claims[0]
        # Never before the dead owner's lease ran out (the same database clock for both).
        assert claims[0]["at"] >= lease_until
        rounds.append((lease_until - killed_at, claims[0]["at"] - killed_at))

    pickups = [pickup for _, pickup in rounds]
    with capsys.disabled():
        print(
            f"\ntakeover after SIGKILL (lease {LEASE_SECONDS}s, poll {POLL_SECONDS}s):"
            + ";".join(f" lease left {left:.2f}s, claimed {p:.2f}s after" for left, p in rounds)
        )
    assert max(pickups) <= LEASE_SECONDS + POLL_SECONDS + 0.5, rounds
    charged = await cluster.fetch("SELECT amount FROM payments WHERE status = 'charged'")
    assert [row["amount"] for row in charged] == [10] * TAKEOVER_ROUNDS
    assert await cluster.balance("user1") == 100 - 10 * TAKEOVER_ROUNDS
    assert await cluster.stock("item1") == 5 - TAKEOVER_ROUNDS
