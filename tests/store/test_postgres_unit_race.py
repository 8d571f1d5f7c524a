"""A PostgreSQL unit whose business key is taken while its actions run: it is rolled back
whole, and the request gets the saga that took the key, as a request that came second would.

The key is checked with the unit's first action; a saga that takes it later (another process
starting it the ordinary way) is only seen by the unit's insert: the one of an ended saga
(sent with the COMMIT) and the one of a saga that leaves the unit running.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON
from sagakit.saga import Saga, Step, StepContext
from sagakit.store.postgres import PostgresAction, PostgresCall, PostgresStore

TAKE_KEY = (
    "INSERT INTO saga_instances (saga_id, name, version, status, input, business_key,"
    " created_at, updated_at, owner, fence, lease_until)"
    " VALUES ('other', 'race', 1, 'running', '{}', 'k', 0, 0, NULL, 1, NULL)"
)


class Racing(Step):
    """A local step that writes an effect, then lets another connection take the key."""

    name = "racing"

    def __init__(self, url: str) -> None:
        self.url = url

    async def do(self, ctx: StepContext) -> JSON:  # pragma: no cover - always local here
        raise AssertionError("runs as a local action")

    def local_action(self, ctx: StepContext, store: object) -> object | None:
        assert isinstance(store, PostgresStore)

        async def run(conn: object) -> JSON:
            assert isinstance(conn, asyncpg.pool.PoolConnectionProxy)
            await conn.execute("INSERT INTO race_effects VALUES ($1)", ctx.saga_id)
            other = await asyncpg.connect(self.url)
            try:
                await other.execute(TAKE_KEY)  # committed at once
            finally:
                await other.close()
            return "done"

        return PostgresAction(store.db, run)


class Remote(Step):
    """A step with no local action: the unit leaves the saga running before it."""

    name = "remote"

    async def do(self, ctx: StepContext) -> JSON:
        return "remote"


@pytest.mark.parametrize("ends", [True, False], ids=["ended", "left running"])
async def test_a_key_taken_during_the_unit_rolls_it_back_and_answers_the_other_saga(
    postgres_url: str, ends: bool
) -> None:
    """Nothing of the unit stays (its effect, its saga); the answer is the saga with the key."""
    store = await PostgresStore.open(postgres_url)
    steps: list[Step] = [Racing(postgres_url)] if ends else [Racing(postgres_url), Remote()]
    orch = SagaOrchestrator(store, [Saga("race", steps)], one_unit=True)
    try:
        async with store.db.connection() as conn:
            await conn.execute("CREATE TABLE race_effects (saga_id text)")
        handle = await orch.start("race", {}, business_key="k")
        async with store.db.connection() as conn:
            effects = await conn.fetchval("SELECT count(*) FROM race_effects")
            sagas = await conn.fetch("SELECT saga_id FROM saga_instances")
            await conn.execute("DROP TABLE race_effects")
        await orch.shutdown()
    finally:
        await store.close()

    assert (handle.created, handle.instance.saga_id) == (False, "other")
    assert effects == 0
    assert [r["saga_id"] for r in sagas] == ["other"]


SLOW_CALL = """
CREATE FUNCTION race_slow_call(p_saga text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO race_effects VALUES (p_saga);
    PERFORM pg_sleep(0.5);
    RETURN NULL;
END $$
"""


class SlowCall(Step):
    """A local step given as a call (so the whole unit is one statement) that takes 0.5 s."""

    name = "slow"

    async def do(self, ctx: StepContext) -> JSON:  # pragma: no cover - always local here
        raise AssertionError("runs as a local action")

    def local_action(self, ctx: StepContext, store: object) -> object | None:
        assert isinstance(store, PostgresStore)
        call = PostgresCall("race_slow_call", (ctx.saga_id,), ("text",), "slow")
        return PostgresAction.of_call(store.db, call)


async def test_a_key_taken_during_the_one_statement_unit_discards_it(postgres_url: str) -> None:
    """The key's check passed, then another connection took the key: the statement's insert
    finds it, the statement fails whole (its call's effect too), and the request gets the
    saga that took the key."""
    store = await PostgresStore.open(postgres_url)
    orch = SagaOrchestrator(store, [Saga("race", [SlowCall()])], one_unit=True)

    async def take_key() -> None:
        await asyncio.sleep(0.2)  # inside the call's sleep: after the unit's key check
        other = await asyncpg.connect(postgres_url)
        try:
            await other.execute(TAKE_KEY)
        finally:
            await other.close()

    try:
        async with store.db.connection() as conn:
            await conn.execute("CREATE TABLE race_effects (saga_id text)")
            await conn.execute(SLOW_CALL)
        taking = asyncio.create_task(take_key())
        handle = await orch.start("race", {}, business_key="k")
        await taking
        async with store.db.connection() as conn:
            effects = await conn.fetchval("SELECT count(*) FROM race_effects")
            sagas = await conn.fetch("SELECT saga_id FROM saga_instances")
            await conn.execute("DROP TABLE race_effects")
            await conn.execute("DROP FUNCTION race_slow_call(text)")
        await orch.shutdown()
    finally:
        await store.close()

    assert (handle.created, handle.instance.saga_id) == (False, "other")
    assert effects == 0
    assert [r["saga_id"] for r in sagas] == ["other"]
