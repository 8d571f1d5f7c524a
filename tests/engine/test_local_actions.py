"""Local actions: a step's effect and its record commit together, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import pytest

from sagakit.errors import LeaseLost, StepFailed, StoreError
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, SagaStatus, StepStatus, Transition
from sagakit.retry import RetryPolicy
from sagakit.saga import Saga, Step, StepContext
from sagakit.store import MemoryStore
from sagakit.store.postgres import PostgresAction, PostgresStore
from sagakit.store.postgres_db import Connection
from sagakit.store.sqlite import SqliteAction, SqliteStore

Store = SqliteStore | PostgresStore
CREATE = "CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, step TEXT NOT NULL)"


@pytest.fixture(params=["sqlite", "postgres"])
async def db_store(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[Store]:
    """A store with a database of its own, holding an ``effects`` table for the steps."""
    store: Store
    if request.param == "sqlite":
        store = await SqliteStore.open(sqlite_url)
        await store.db.write(lambda conn: conn.execute(CREATE))
    else:
        store = await PostgresStore.open(request.getfixturevalue("postgres_url"))
        async with store.db.connection() as conn:
            await conn.execute(CREATE)
    try:
        yield store
    finally:
        await store.close()


async def effects(store: Store) -> list[str]:
    """The keys of every effect applied, in key order."""
    if isinstance(store, SqliteStore):
        rows = await store.db.read(
            lambda conn: conn.execute("SELECT key FROM effects ORDER BY key").fetchall()
        )
        return [str(r[0]) for r in rows]
    async with store.db.connection() as conn:
        return [r["key"] for r in await conn.fetch("SELECT key FROM effects ORDER BY key")]


class Effect(Step):
    """A step that inserts one row keyed by its idempotency key, inside the store's transaction.

    ``refuse`` writes a refusal row then raises ``StepFailed``; ``errors`` raise after
    writing, so the row must be rolled back.
    """

    def __init__(self, name: str, *, refuse: bool = False, errors: int = 0) -> None:
        self.name = name
        self.refuse = refuse
        self.errors = errors
        self.retry = RetryPolicy(max_attempts=3, initial_delay=0.001)
        self.compensated: list[str] = []

    async def do(self, ctx: StepContext) -> JSON:
        raise AssertionError("a local action must run instead of do")

    async def compensate(self, ctx: StepContext) -> None:
        self.compensated.append(ctx.idempotency_key)

    def _outcome(self, key: str) -> JSON:
        if self.refuse:
            raise StepFailed(f"{self.name} refused")
        if self.errors:
            self.errors -= 1
            raise RuntimeError("disk on fire")
        return {"key": key}

    def local_action(self, ctx: StepContext, store: object) -> object | None:
        key = ctx.idempotency_key + (":refused" if self.refuse else "")

        def on_sqlite(conn: sqlite3.Connection) -> JSON:
            conn.execute("INSERT INTO effects (key, step) VALUES (?, ?)", (key, self.name))
            return self._outcome(key)

        async def on_postgres(conn: Connection) -> JSON:
            await conn.execute("INSERT INTO effects (key, step) VALUES ($1, $2)", key, self.name)
            return self._outcome(key)

        if isinstance(store, SqliteStore):
            return SqliteAction(store.db, on_sqlite)
        if isinstance(store, PostgresStore):
            return PostgresAction(store.db, on_postgres)
        return None


async def run(store: Store, *steps: Step) -> tuple[SagaOrchestrator, str]:
    """Run a saga of ``steps`` to its end; the orchestrator and the saga's id."""
    orch = SagaOrchestrator(store, [Saga("local", list(steps))], sleep=_no_wait)
    started = await orch.start("local", {})
    await orch.wait(started.instance.saga_id, timeout=10.0)
    return orch, started.instance.saga_id


async def _no_wait(seconds: float) -> None:
    return None


async def test_local_actions_commit_their_effects_with_the_step_results(db_store: Store) -> None:
    """Each local action's row and its step's result are both stored; the saga completes."""
    orch, saga_id = await run(db_store, Effect("a"), Effect("b"))

    done = await db_store.get(saga_id)
    assert done is not None
    assert done.status is SagaStatus.COMPLETED
    assert [s.result for s in done.steps] == [{"key": f"{saga_id}:a"}, {"key": f"{saga_id}:b"}]
    assert await effects(db_store) == [f"{saga_id}:a", f"{saga_id}:b"]
    await orch.shutdown()


async def test_local_refusal_keeps_its_record_and_compensates_the_steps_before(
    db_store: Store,
) -> None:
    """A refusing local action keeps what it wrote, records no success, and earlier steps undo."""
    first, refusing = Effect("a"), Effect("b", refuse=True)
    orch, saga_id = await run(db_store, first, refusing)

    done = await db_store.get(saga_id)
    assert done is not None
    assert done.status is SagaStatus.COMPENSATED
    assert (done.error, done.failed_step) == ("b refused", "b")
    assert [s.status for s in done.steps] == [StepStatus.COMPENSATED, StepStatus.FAILED]
    assert done.steps[1].result is None
    assert await effects(db_store) == [f"{saga_id}:a", f"{saga_id}:b:refused"]
    assert first.compensated == [f"{saga_id}:a"]
    assert refusing.compensated == []
    await orch.shutdown()


async def test_local_action_that_errors_is_rolled_back_and_retried(db_store: Store) -> None:
    """An action raising a transient error applies nothing; its retry applies the effect once."""
    flaky = Effect("a", errors=2)
    orch, saga_id = await run(db_store, flaky)

    done = await db_store.get(saga_id)
    assert done is not None
    assert done.status is SagaStatus.COMPLETED
    assert done.steps[0].attempts == 3
    assert await effects(db_store) == [f"{saga_id}:a"]
    await orch.shutdown()


async def test_local_action_with_a_stale_fence_applies_nothing(db_store: Store) -> None:
    """A writer whose fence is stale has its action rolled back and learns of it."""
    orch = SagaOrchestrator(db_store, [Saga("local", [Effect("a")])], sleep=_no_wait)
    started = await orch.start("local", {})
    saga_id = started.instance.saga_id
    await orch.wait(saga_id, timeout=10.0)
    before = await effects(db_store)
    action = Effect("late").local_action(
        StepContext(
            saga_id=saga_id,
            saga_name="local",
            step="late",
            input={},
            results={},
            idempotency_key="zombie",
            attempt=1,
        ),
        db_store,
    )
    stale = Transition(saga_id=saga_id, fence=0, status=SagaStatus.COMPLETED)

    with pytest.raises(LeaseLost):
        await db_store.transition_with(stale, action, 0)

    assert await effects(db_store) == before
    await orch.shutdown()


async def test_an_action_of_another_database_is_refused(db_store: Store) -> None:
    """A local action built for another store is refused rather than run in the wrong place."""
    other = MemoryStore()
    with pytest.raises(StoreError):
        await other.transition_with(
            Transition(saga_id="s", fence=1, status=SagaStatus.RUNNING), object(), 0
        )
    foreign = SqliteAction(db=object(), run=lambda conn: None)  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        await db_store.transition_with(
            Transition(saga_id="s", fence=1, status=SagaStatus.RUNNING), foreign, 0
        )
