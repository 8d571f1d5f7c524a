"""Outgoing messages: a step's command is written with the record of its attempt, on every store.

``Step.outgoing`` gives the message; the orchestrator adds it to the transition that records
the attempt (a start, a retry, a rerun after a crash, a compensation attempt), so it exists
if and only if that attempt is recorded. The AMQP transport relays these rows.
"""

from __future__ import annotations

import orjson
import pytest

from sagakit.errors import LeaseLost, StepFailed
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, JSONObject, OutboxMessage, SagaStatus, StepStatus, Transition
from sagakit.retry import RetryPolicy
from sagakit.saga import Parallel, Saga, Step, StepContext
from sagakit.store import MemoryStore
from sagakit.store.base import SagaStore
from sagakit.store.postgres import PostgresStore
from sagakit.store.sqlite import SqliteStore
from sagakit.testing import CrashAt, wait_through_crashes
from tests.engine.test_local_actions import Effect, Store, db_store

__all__ = ["db_store"]  # the fixture, for the tests below

#: (saga id, step, kind, body) of one outbox row.
Row = tuple[str, str, str, JSONObject]


async def outbox(store: SagaStore) -> list[Row]:
    """Every message the store's outbox holds, oldest first."""
    if isinstance(store, MemoryStore):
        return [(saga_id, m.step, m.kind, m.body) for saga_id, m in store.outbox]
    sql = "SELECT saga_id, step, kind, body FROM saga_outbox ORDER BY id"
    if isinstance(store, SqliteStore):
        rows: list[tuple[str, str, str, str]] = await store.db.read(
            lambda conn: conn.execute(sql).fetchall()
        )
    else:
        assert isinstance(store, PostgresStore)
        async with store.db.connection() as conn:
            records = await conn.fetch(sql.replace("body", "body::text"))
        rows = [(r[0], r[1], r[2], r[3]) for r in records]
    return [(saga_id, step, kind, orjson.loads(body)) for saga_id, step, kind, body in rows]


class Plain(Step):
    """A step sending nothing, whose result the next step's command carries."""

    def __init__(self, name: str, *, refuse: bool = False) -> None:
        self.name = name
        self.refuse = refuse

    async def do(self, ctx: StepContext) -> JSON:
        if self.refuse:
            raise StepFailed(f"{self.name} refused")
        return {"from": self.name}


class Sender(Step):
    """A step whose attempts send ``do`` and whose compensations send ``undo``.

    ``do`` checks that its attempt's command is already in the outbox (it was written with
    the attempt's record, before ``do`` ran); ``errors`` attempts fail, transiently.
    """

    def __init__(self, name: str, store: SagaStore, *, errors: int = 0) -> None:
        self.name = name
        self.store = store
        self.errors = errors
        self.retry = RetryPolicy(max_attempts=3, initial_delay=0.001)
        self.seen: list[Row] = []

    def outgoing(self, ctx: StepContext, *, compensation: bool) -> OutboxMessage:
        body: JSONObject = {"attempt": ctx.attempt, "results": dict(ctx.results)}
        kind = "undo" if compensation else "do"
        return OutboxMessage(step=self.name, key=ctx.idempotency_key, kind=kind, body=body)

    async def do(self, ctx: StepContext) -> JSON:
        mine = [r for r in await outbox(self.store) if r[0] == ctx.saga_id and r[1] == self.name]
        self.seen.append(mine[-1])
        assert mine[-1][3]["attempt"] == ctx.attempt
        if self.errors:
            self.errors -= 1
            raise RuntimeError("no answer")
        return {"sent": ctx.attempt}


async def _no_wait(seconds: float) -> None:
    return None


async def run(store: SagaStore, *steps: Step | Parallel, probe: CrashAt | None = None) -> str:
    """Run a saga of ``steps`` to its end (through crashes); its id."""
    kwargs = {} if probe is None else {"probe": probe}
    orch = SagaOrchestrator(store, [Saga("send", list(steps))], sleep=_no_wait, **kwargs)  # type: ignore[arg-type]
    started = await orch.start("send", {})
    saga_id = started.instance.saga_id
    await wait_through_crashes(orch, saga_id)
    await orch.shutdown()
    return saga_id


async def test_a_step_command_is_written_with_its_start_and_carries_earlier_results(
    store: SagaStore,
) -> None:
    """One command per attempt, present before ``do`` ran, holding the results before it."""
    sender = Sender("b", store)
    saga_id = await run(store, Plain("a"), sender)

    expected = (saga_id, "b", "do", {"attempt": 1, "results": {"a": {"from": "a"}}})
    assert await outbox(store) == [expected]
    assert sender.seen == [expected]
    done = await store.get(saga_id)
    assert done is not None
    assert done.status is SagaStatus.COMPLETED


async def test_each_retry_records_its_attempt_with_a_command_of_its_own(store: SagaStore) -> None:
    """A failed attempt's retry is recorded with the next attempt's command."""
    saga_id = await run(store, Sender("b", store, errors=2))

    assert [(r[2], r[3]["attempt"]) for r in await outbox(store)] == [
        ("do", 1),
        ("do", 2),
        ("do", 3),
    ]
    done = await store.get(saga_id)
    assert done is not None
    assert done.steps[0].attempts == 3


async def test_a_crash_before_do_reruns_the_step_with_a_new_command(store: SagaStore) -> None:
    """Killed after the start (and its command) was written: the rerun sends attempt 2."""
    crash = CrashAt("before_do:b")
    saga_id = await run(store, Plain("a"), Sender("b", store), probe=crash)

    assert [str(p) for p in crash.fired] == ["before_do:b"]
    assert [(r[1], r[3]["attempt"]) for r in await outbox(store)] == [("b", 1), ("b", 2)]
    done = await store.get(saga_id)
    assert done is not None
    assert done.status is SagaStatus.COMPLETED


async def test_compensation_attempts_send_the_compensation_command(store: SagaStore) -> None:
    """A later refusal compensates the sender: its undo command is recorded with the attempt."""
    saga_id = await run(store, Sender("b", store), Plain("c", refuse=True))

    assert [(r[2], r[3]["attempt"]) for r in await outbox(store)] == [("do", 1), ("undo", 1)]
    done = await store.get(saga_id)
    assert done is not None
    assert done.status is SagaStatus.COMPENSATED
    assert done.steps[0].status is StepStatus.COMPENSATED


async def test_a_parallel_group_starts_with_every_member_command(store: SagaStore) -> None:
    """The members of a group are started in one write, which holds each member's command."""
    saga_id = await run(store, Plain("a"), Parallel(Sender("b", store), Sender("c", store)))

    assert sorted((r[1], r[3]["attempt"]) for r in await outbox(store)) == [("b", 1), ("c", 1)]
    events = [(e.type, e.step) for e in await store.events(saga_id)]
    at = events.index(("step_succeeded", "a"))
    assert sorted(events[at + 1 : at + 3]) == [("step_started", "b"), ("step_started", "c")]


async def test_a_transition_with_a_stale_fence_adds_no_message(store: SagaStore) -> None:
    """A zombie's write, refused for its fence, leaves no command behind."""
    saga_id = await run(store, Plain("a"))
    message = OutboxMessage(step="a", key="zombie", kind="do", body={})
    stale = Transition(saga_id=saga_id, fence=0, status=SagaStatus.RUNNING, outbox=(message,))

    with pytest.raises(LeaseLost):
        await store.transition(stale)

    assert await outbox(store) == []


async def test_a_command_after_a_local_action_carries_that_action_result(db_store: Store) -> None:
    """The local action's result is known only inside the transaction: the command has it."""
    saga_id = await run(db_store, Effect("a"), Sender("b", db_store))

    results = {"a": {"key": f"{saga_id}:a"}}
    assert await outbox(db_store) == [(saga_id, "b", "do", {"attempt": 1, "results": results})]


async def test_a_command_builder_that_raises_rolls_the_local_action_back(db_store: Store) -> None:
    """An error building the command undoes the local action with it; the retry applies both."""

    class Flaky(Sender):
        calls = 0

        def outgoing(self, ctx: StepContext, *, compensation: bool) -> OutboxMessage:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("cannot build the command")
            return super().outgoing(ctx, compensation=compensation)

    saga_id = await run(db_store, Effect("a"), Flaky("b", db_store))

    done = await db_store.get(saga_id)
    assert done is not None
    assert done.status is SagaStatus.COMPLETED
    assert done.steps[0].attempts == 2
    assert [r[1] for r in await outbox(db_store)] == ["b"]
    if isinstance(db_store, SqliteStore):
        count = await db_store.db.read(
            lambda conn: conn.execute("SELECT count(*) FROM effects").fetchone()[0]
        )
    else:
        async with db_store.db.connection() as conn:
            count = await conn.fetchval("SELECT count(*) FROM effects")
    assert count == 1


def test_a_saga_knows_which_steps_send() -> None:
    """Only steps overriding ``outgoing`` are asked for messages."""
    saga = Saga("s", [Plain("a"), Sender("b", MemoryStore()), Parallel(Plain("c"), Plain("d"))])
    assert saga.senders == frozenset({1})
