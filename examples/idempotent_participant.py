"""An idempotent participant (docs/how-to/idempotent-participant.md; the acceptance tests run it).

A wallet service keeps its balances and its inbox (one row per idempotency key) in one
SQLite database, and changes both in one transaction. Run as a script, it kills the
saga's process right after a charge and right after a refund, and shows that each
effect still happened once.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from sagakit import JSON, JSONObject, Saga, SagaOrchestrator, StepContext, StepFailed, step
from sagakit.testing import CrashAt, FakeClock, MemoryStore, wait_through_crashes

SCHEMA = """
CREATE TABLE IF NOT EXISTS wallets (
    user_id TEXT PRIMARY KEY,
    balance INTEGER NOT NULL CHECK (balance >= 0)
);
CREATE TABLE IF NOT EXISTS charges (   -- the inbox: one row per idempotency key
    key TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    status TEXT NOT NULL                -- charged, refused, refunded, or voided (a tombstone)
);
"""


class Wallets:
    """The participant: each operation is one transaction holding the effect and its row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with closing(sqlite3.connect(path)) as db:
            db.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed if the block ends, else rolled back."""
        with closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")  # take the write lock first: no lost updates
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def add(self, user_id: str, balance: int) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO wallets VALUES (?, ?)", (user_id, balance))

    def balance(self, user_id: str) -> int:
        with self.transaction() as db:
            row = db.execute("SELECT balance FROM wallets WHERE user_id = ?", (user_id,))
            return int(row.fetchone()[0])

    def statuses(self) -> list[str]:
        with self.transaction() as db:
            return [s for (s,) in db.execute("SELECT status FROM charges ORDER BY rowid")]

    def charge(self, key: str, user_id: str, amount: int) -> str:
        """Debit ``amount`` once per ``key``; a replay gets the first outcome back."""
        with self.transaction() as db:
            seen = db.execute("SELECT status FROM charges WHERE key = ?", (key,)).fetchone()
            if seen is not None:
                return str(seen[0])  # a replay, or a late call after the refund (voided)
            debited = db.execute(
                "UPDATE wallets SET balance = balance - ? WHERE user_id = ? AND balance >= ?",
                (amount, user_id, amount),
            ).rowcount
            status = "charged" if debited else "refused"
            db.execute("INSERT INTO charges VALUES (?, ?, ?, ?)", (key, user_id, amount, status))
            return status

    def refund(self, key: str) -> None:
        """Undo the charge of ``key`` once; with no charge yet, leave a tombstone."""
        with self.transaction() as db:
            row = db.execute("SELECT user_id, amount, status FROM charges WHERE key = ?", (key,))
            seen = row.fetchone()
            if seen is None:
                db.execute("INSERT INTO charges VALUES (?, '', 0, 'voided')", (key,))
            elif seen[2] == "charged":
                db.execute(
                    "UPDATE wallets SET balance = balance + ? WHERE user_id = ?", (seen[1], seen[0])
                )
                db.execute("UPDATE charges SET status = 'refunded' WHERE key = ?", (key,))


def order_saga(wallets: Wallets) -> Saga:
    """Charge the user, then ship (shipping refuses an empty address)."""

    @step("charge")
    async def charge(ctx: StepContext) -> JSON:
        user_id, total = str(ctx.input["user_id"]), ctx.input["total"]
        assert isinstance(total, int)
        status = await asyncio.to_thread(wallets.charge, ctx.idempotency_key, user_id, total)
        if status != "charged":
            raise StepFailed("Insufficient balance" if status == "refused" else "Charge voided")
        return {"charged": total}

    @charge.compensation
    async def refund(ctx: StepContext) -> None:
        await asyncio.to_thread(wallets.refund, ctx.idempotency_key)

    @step("ship")
    async def ship(ctx: StepContext) -> JSON:
        if not ctx.input["address"]:
            raise StepFailed("Invalid shipping address")
        return None

    return Saga("order", [charge, ship])


async def checkout(wallets: Wallets, input: JSONObject, crash_at: str) -> str:
    """Run one order, killing its process at ``crash_at``; the outcome after recovery."""
    orchestrator = SagaOrchestrator(
        MemoryStore(), [order_saga(wallets)], sleep=FakeClock().sleep, probe=CrashAt(crash_at)
    )
    handle = await orchestrator.start("order", input)
    saga = await wait_through_crashes(orchestrator, handle.saga_id)
    await orchestrator.shutdown()
    return saga.status


async def main() -> None:
    logging.getLogger("sagakit").setLevel(logging.CRITICAL)  # the crashes are on purpose
    with tempfile.TemporaryDirectory() as tmp:
        wallets = Wallets(Path(tmp) / "wallets.db")
        wallets.add("user1", 100)

        order: JSONObject = {"user_id": "user1", "total": 20, "address": "Some Street"}
        status = await checkout(wallets, order, "after_do:charge")
        print(f"crash after the charge: {status}, balance {wallets.balance('user1')}")

        refused: JSONObject = {**order, "address": ""}
        status = await checkout(wallets, refused, "after_compensate:charge")
        print(f"crash after the refund: {status}, balance {wallets.balance('user1')}")

        wallets.refund("late-key")  # the compensation arrived first...
        late = wallets.charge("late-key", "user1", 20)  # ...then the action it undoes
        print(f"a charge after its refund: {late}, balance {wallets.balance('user1')}")
        print("inbox:", ", ".join(wallets.statuses()))


if __name__ == "__main__":
    asyncio.run(main())
