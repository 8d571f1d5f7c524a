"""Stalls at scale: two ``sagakit serve`` processes on one database, one SIGSTOPped past its lease.

The adversarial probe that found the fencing defect, as a test. Checkouts arrive at both
processes (``?wait=false``, 24 at a time, some orders with no address); process A is
stopped (SIGSTOP) for three lease lengths, twice, and continued (SIGCONT). Meanwhile B
claims A's sagas and moves them on; A wakes with its old drivers still in memory and its
worker claims sagas back. Afterwards every saga has ended, money and stock are conserved,
each saga's effects agree with its outcome, and every saga's history keeps the history
property (``tests/history.py``): no once-only transition twice, no row moved back.

Run on PostgreSQL with local steps on and off, and on SQLite with both processes on one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Final

import asyncpg
import httpx
import pytest

from tests.history import Event, violations
from tests.processes import ADMIN_HEADERS, ADMIN_TOKEN, ServeProcess, eventually, free_port

LEASE_SECONDS: Final = 2.0
POLL_SECONDS: Final = 0.3
STALL_SECONDS: Final = 6.0
STALLS: Final = 2
#: How long B is stopped around each of A's wake-ups (past its lease too).
B_STALL_SECONDS: Final = 3.0
ORDERS: Final = 500
CONCURRENCY: Final = 24
#: Every seventh order has a blank address: its saga compensates payment and inventory.
BLANK_EVERY: Final = 7
STOCK: Final = 100_000
BALANCE: Final = 1_000
PRICE: Final = 10
EFFECTS: Final = """
SELECT s.saga_id, s.status, p.status AS payment, r.status AS reservation, h.status AS shipment
FROM saga_instances s
LEFT JOIN payments p ON p.idempotency_key = s.saga_id || ':payment'
LEFT JOIN reservations r ON r.idempotency_key = s.saga_id || ':inventory'
LEFT JOIN shipments h ON h.idempotency_key = s.saga_id || ':shipping'
"""
LEDGER: Final = """
SELECT (SELECT sum(balance) FROM users), (SELECT sum(stock) FROM items),
       (SELECT coalesce(sum(amount), 0) FROM payments WHERE status = 'charged'),
       (SELECT coalesce(sum(l.qty), 0) FROM reservations r
         JOIN order_lines l ON l.order_id = r.order_id WHERE r.status = 'reserved')
"""


class Database:
    """Read-only queries (no parameters) on the services' database, whichever backend."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def rows(self, sql: str) -> list[tuple[object, ...]]:
        """Every row of ``sql``, as tuples."""
        if self.url.startswith("sqlite:///"):
            path = self.url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path, timeout=30.0)) as lite:
                return [tuple(r) for r in lite.execute(sql).fetchall()]
        conn = await asyncpg.connect(self.url)
        try:
            return [tuple(r.values()) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def active(self) -> int:
        """How many sagas are still running or compensating."""
        [(count,)] = await self.rows(
            "SELECT count(*) FROM saga_instances WHERE status IN ('running', 'compensating')"
        )
        assert isinstance(count, int)
        return count


@dataclass
class Run:
    """What the load saw, for the report and the checks."""

    answers: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    resent: int = 0
    stalls: list[float] = field(default_factory=list)


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[list[ServeProcess]]:
    """The processes a test starts; killed and reaped at teardown."""
    started: list[ServeProcess] = []
    try:
        yield started
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                process.signal(signal.SIGCONT)
            process.close()


async def serve(started: list[ServeProcess], url: str, local_steps: str, log: Path) -> ServeProcess:
    """Start ``sagakit serve`` on ``url`` with a short lease; return once it is healthy."""
    port = free_port()
    env = {
        "SAGAKIT_ADMIN_TOKEN": ADMIN_TOKEN,
        "SAGAKIT_LEASE_SECONDS": str(LEASE_SECONDS),
        "SAGAKIT_POLL_SECONDS": str(POLL_SECONDS),
        "SAGAKIT_LOCAL_STEPS": local_steps,
        "SAGAKIT_DEMO_DATA": "false",
        "SAGAKIT_LOG_LEVEL": "warning",
        # Per-transition writes: a one-unit checkout is never mid-flight for a stall to catch.
        "SAGAKIT_ONE_UNIT": "false",
    }
    process = ServeProcess(port, ["serve", "--port", str(port), "--database-url", url], env, log)
    started.append(process)
    await process.wait_healthy()
    return process


async def create_shop(client: httpx.AsyncClient) -> list[str]:
    """One item with ample stock, and one user and one order per checkout."""
    item = {"item_id": "widget", "stock": STOCK, "price": PRICE}
    assert (await client.post("/items", json=item, headers=ADMIN_HEADERS)).status_code == 201
    room = asyncio.Semaphore(CONCURRENCY)

    async def create(n: int) -> str:
        user = {"user_id": f"user-{n:03d}", "balance": BALANCE}
        address = "" if n % BLANK_EVERY == 0 else f"{n} Road"
        order = {
            "order_id": f"order-{n:03d}",
            "user_id": user["user_id"],
            "items": {"widget": 1 + n % 3},
            "address": address,
        }
        async with room:
            made = await client.post("/users", json=user, headers=ADMIN_HEADERS)
            assert made.status_code == 201, made.text
            made = await client.post("/orders", json=order)
            assert made.status_code == 201, made.text
        return str(order["order_id"])

    return list(await asyncio.gather(*(create(n) for n in range(ORDERS))))


async def send_load(clients: Sequence[httpx.AsyncClient], orders: list[str], run: Run) -> None:
    """Every checkout once (``?wait=false``), alternating processes, 24 at a time."""
    room = asyncio.Semaphore(CONCURRENCY)

    async def checkout(n: int, order_id: str) -> None:
        async with room:
            for tries in range(3):
                # A stopped server closes its idle keep-alive connections as it wakes, maybe
                # under a request sent meanwhile: a checkout is idempotent, send it again.
                try:
                    answer = await clients[n % 2].post(
                        f"/checkout/{order_id}", params={"wait": "false"}
                    )
                    break
                except httpx.TransportError:
                    run.resent += 1
                    if tries == 2:
                        raise
        run.answers[answer.status_code] += 1
        if answer.status_code >= 500:
            run.problems.append(f"checkout {order_id}: {answer.status_code} {answer.text}")

    await asyncio.gather(*(checkout(n, o) for n, o in enumerate(orders)))


async def stall(a: ServeProcess, b: ServeProcess, run: Run) -> None:
    """Stop A for ``STALL_SECONDS``, ``STALLS`` times; stop B too around each of A's wake-ups.

    While A sleeps, B claims A's sagas; B is stopped a second before A wakes and stays
    stopped past its own lease, so that A's worker claims back sagas that B moved on while
    A's old drivers, from before its stop, are still alive (blocked behind B's row locks).
    """
    for _ in range(STALLS):
        await asyncio.sleep(0.5)
        run.stalls.append(time.time())
        a.signal(signal.SIGSTOP)
        await asyncio.sleep(STALL_SECONDS - 1.0)
        b.signal(signal.SIGSTOP)
        await asyncio.sleep(1.0)
        a.signal(signal.SIGCONT)
        await asyncio.sleep(B_STALL_SECONDS - 1.0)
        b.signal(signal.SIGCONT)
        await asyncio.sleep(1.0)


async def history_breaches(db: Database) -> list[str]:
    """Every breach of the history property, over every saga."""
    events: dict[str, list[Event]] = {}
    for saga_id, type_, step, attempt in await db.rows(
        "SELECT saga_id, type, step, attempt FROM saga_events ORDER BY id"
    ):
        events.setdefault(str(saga_id), []).append(
            Event(str(type_), None if step is None else str(step), attempt)  # type: ignore[arg-type]
        )
    steps: dict[str, dict[str, str]] = {}
    for saga_id, name, status in await db.rows("SELECT saga_id, name, status FROM saga_steps"):
        steps.setdefault(str(saga_id), {})[str(name)] = str(status)
    found = []
    for saga_id, status in await db.rows("SELECT saga_id, status FROM saga_instances"):
        sid = str(saga_id)
        found += violations(sid, events.get(sid, []), status=str(status), steps=steps.get(sid))
    return found


async def ledger(db: Database) -> tuple[int, ...]:
    """Total balance, total stock, sum of charged payments, units held by reservations."""
    return tuple(int(Decimal(str(value))) for value in (await db.rows(LEDGER))[0])


async def effect_breaches(db: Database, initial: tuple[int, ...]) -> list[str]:
    """Money or stock not conserved, and sagas whose effects disagree with their outcome."""
    found = []
    balance, stock, charged, reserved = await ledger(db)
    if initial[0] != balance + charged:
        found.append(f"money: {initial[0]} at first, now {balance} + {charged} charged")
    if initial[1] != stock + reserved:
        found.append(f"stock: {initial[1]} at first, now {stock} + {reserved} reserved")
    applied = ("charged", "reserved", "shipped")
    for saga_id, status, *effects in await db.rows(EFFECTS):
        if status == "completed" and tuple(effects) != applied:
            found.append(f"completed saga {saga_id} has effects {effects}")
        if status != "completed" and set(effects) & set(applied):
            found.append(f"{status} saga {saga_id} left {effects} applied")
    return found


async def claims_back(db: Database, pid: int) -> int:
    """How many sagas the process ``pid`` claimed after another process had claimed them."""
    rows = await db.rows(
        "SELECT saga_id, detail FROM saga_events WHERE type = 'saga_claimed' ORDER BY id"
    )
    claimers: dict[str, list[bool]] = {}
    for saga_id, detail in rows:
        claimers.setdefault(str(saga_id), []).append(f":{pid}:" in str(detail))
    return sum(
        1 for seq in claimers.values() if any(not a and b for a, b in itertools.pairwise(seq))
    )


@pytest.mark.parametrize(
    ("backend", "local_steps"),
    [("postgres", "true"), ("postgres", "false"), ("sqlite", "true")],
    ids=["postgres-local-steps", "postgres-separate-commits", "sqlite-local-steps"],
)
async def test_process_stopped_past_its_lease_under_load_never_writes_over_another(
    backend: str,
    local_steps: str,
    processes: list[ServeProcess],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two processes, one SIGSTOPped past its lease twice: all sagas end, nothing is undone."""
    url = (
        request.getfixturevalue("postgres_url")
        if backend == "postgres"
        else f"sqlite:///{tmp_path / 'shop.db'}"
    )
    db = Database(url)
    a = await serve(processes, url, local_steps, tmp_path / "a.log")
    b = await serve(processes, url, local_steps, tmp_path / "b.log")
    run = Run()
    async with a.client(60.0) as client_a, b.client(60.0) as client_b:
        orders = await create_shop(client_b)
        initial = await ledger(db)
        async with asyncio.TaskGroup() as group:
            group.create_task(send_load([client_a, client_b], orders, run), name="load")
            group.create_task(stall(a, b, run), name="stall")

    async def settled() -> bool | None:
        return True if await db.active() == 0 else None

    await eventually(settled, timeout=60.0, what="every saga ended", every=0.2)
    found = run.problems + await history_breaches(db) + await effect_breaches(db, initial)
    [(ended,)] = await db.rows("SELECT count(*) FROM saga_instances")
    back = await claims_back(db, a.pid)
    with capsys.disabled():
        print(
            f"\nstall run ({backend}, local steps {local_steps}): {ended} sagas,"
            f" answers {dict(run.answers)} ({run.resent} re-sent),"
            f" {len(run.stalls)} stops of {STALL_SECONDS}s"
            f" (lease {LEASE_SECONDS}s), {back} sagas claimed back by the stopped process,"
            f" {len(found)} violations"
        )
    assert found == [], "\n".join(found[:40])
    assert ended == ORDERS
