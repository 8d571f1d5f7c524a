"""On SQLite, each local action of a unit is undone alone when it raises, whichever action
it is (the first one rolls back to the unit's own savepoint, a later one to its own), and a
refusal's writes stay."""

from __future__ import annotations

import sqlite3

from sagakit.errors import StepFailed
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, SagaStatus
from sagakit.retry import RetryPolicy
from sagakit.saga import Saga, Step, StepContext
from sagakit.store.sqlite import SqliteAction, SqliteStore


class Marking(Step):
    """A local step that writes a mark; ``fails`` of its first actions raise after writing
    (``refuses``: refuse instead); its local compensation writes an ``undo`` mark."""

    def __init__(self, name: str, *, fails: int = 0, refuses: bool = False) -> None:
        self.name = name
        self.fails = fails
        self.refuses = refuses
        self.retry = RetryPolicy(max_attempts=3, initial_delay=0.001)

    def local_action(self, ctx: StepContext, store: object) -> object | None:
        assert isinstance(store, SqliteStore)
        failing, self.fails = self.fails > 0, max(0, self.fails - 1)

        def run(conn: sqlite3.Connection) -> JSON:
            conn.execute("INSERT INTO marks (mark) VALUES (?)", (f"{self.name}:{ctx.attempt}",))
            if self.refuses:
                raise StepFailed(f"{self.name} refused")
            if failing:
                raise RuntimeError(f"{self.name} broke")
            return {"done": self.name}

        return SqliteAction(store.db, run)

    def local_compensation(self, ctx: StepContext, store: object) -> object | None:
        assert isinstance(store, SqliteStore)
        return SqliteAction(
            store.db,
            lambda conn: (
                conn.execute("INSERT INTO marks (mark) VALUES (?)", (f"undo {self.name}",)).rowcount
            ),
        )


async def run(sqlite_url: str, steps: list[Step]) -> tuple[SagaStatus, list[str]]:
    store = await SqliteStore.open(sqlite_url)
    try:
        await store.db.write(lambda conn: conn.execute("CREATE TABLE marks (mark TEXT)"))
        orch = SagaOrchestrator(store, [Saga("marks", steps)], one_unit=True)
        handle = await orch.start("marks", {})
        ended = await handle.result(timeout=10)
        await orch.shutdown()
        marks = await store.db.read(
            lambda conn: [m for (m,) in conn.execute("SELECT mark FROM marks ORDER BY rowid")]
        )
        return ended.status, marks
    finally:
        await store.close()


async def test_a_later_action_that_raises_is_undone_alone(sqlite_url: str) -> None:
    status, marks = await run(sqlite_url, [Marking("a"), Marking("b", fails=1), Marking("c")])
    assert status is SagaStatus.COMPLETED
    # a's mark stays; b's first attempt was rolled back, its retry (attempt 2) kept.
    assert marks == ["a:1", "b:2", "c:1"]


async def test_the_first_action_that_raises_is_undone(sqlite_url: str) -> None:
    status, marks = await run(sqlite_url, [Marking("a", fails=1), Marking("b")])
    assert status is SagaStatus.COMPLETED
    assert marks == ["a:2", "b:1"]


async def test_a_refusal_keeps_its_writes_and_the_compensations_run_in_the_unit(
    sqlite_url: str,
) -> None:
    status, marks = await run(sqlite_url, [Marking("a"), Marking("b"), Marking("c", refuses=True)])
    assert status is SagaStatus.COMPENSATED
    assert marks == ["a:1", "b:1", "c:1", "undo b", "undo a"]
