"""Parallel step groups (``Parallel(b, c)``): concurrency, compensation and crash recovery,
against every store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from sagakit import Parallel
from sagakit.errors import StepFailed
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, SagaEvent, SagaInstance, SagaStatus, StepStatus
from sagakit.saga import Saga, Step, StepContext, WaitFor
from tests.engine.test_local_actions import Effect, _no_wait, db_store, effects
from tests.engine.test_local_actions import Store as LocalStore
from tests.engine.test_orchestrator import (
    SAGA,
    Call,
    Crash,
    Gated,
    Harness,
    Journal,
    Scripted,
    crash_at,
    harness,
    statuses,
)

__all__ = ["db_store", "harness"]  # the fixtures, imported so that pytest finds them here

S = StepStatus


class After(Scripted):
    """A scripted step whose ``do`` says it entered, then waits for ``after`` before acting."""

    def __init__(
        self,
        name: str,
        journal: Journal,
        *,
        after: Sequence[asyncio.Event] = (),
        fails: Sequence[Exception] = (),
        result: JSON = None,
    ) -> None:
        super().__init__(name, journal, fails=fails, result=result)
        self.after = list(after)
        self.entered = asyncio.Event()

    async def do(self, ctx: StepContext) -> JSON:
        self.entered.set()
        for event in self.after:
            await asyncio.wait_for(event.wait(), 5.0)
        return await super().do(ctx)


class Meeting(Scripted):
    """A step that cannot finish alone: it sets its own event and waits for its sibling's."""

    def __init__(self, name: str, journal: Journal, mine: asyncio.Event, theirs: asyncio.Event):
        super().__init__(name, journal, result=f"{name} done")
        self.mine, self.theirs = mine, theirs

    async def do(self, ctx: StepContext) -> JSON:
        self.journal.calls.append(Call("do", ctx))
        self.mine.set()
        await asyncio.wait_for(self.theirs.wait(), 5.0)
        return self.result


# -- definitions ------------------------------------------------------------------------------


def test_parallel_group_flattens_into_the_steps_and_records_its_group(harness: Harness) -> None:
    """``[a, Parallel(b, c), d]`` is the steps ``(a, b, c, d)`` in groups ``(0,), (1, 2), (3,)``."""
    a, b, c, d = (harness.step(n) for n in "abcd")

    saga = Saga(SAGA, [a, Parallel(b, c), d])

    assert saga.steps == (a, b, c, d)
    assert saga.step_names == ("a", "b", "c", "d")
    assert saga.groups == ((0,), (1, 2), (3,))
    assert saga.group_of == ((0,), (1, 2), (1, 2), (3,))


def test_empty_parallel_group_is_refused(harness: Harness) -> None:
    """A group needs at least one step."""
    with pytest.raises(ValueError, match="at least one step"):
        Parallel()


def test_wait_for_inside_a_parallel_group_is_refused(harness: Harness) -> None:
    """A step that parks the saga cannot run beside others."""
    with pytest.raises(ValueError, match="WaitFor"):
        Parallel(harness.step("a"), WaitFor("approval", deadline=None))


def test_nested_parallel_group_is_refused(harness: Harness) -> None:
    """Groups do not nest."""
    inner = Parallel(harness.step("a"))
    with pytest.raises(ValueError, match="do not nest"):
        Parallel(harness.step("b"), inner)  # type: ignore[arg-type]


def test_step_names_must_be_unique_across_groups(harness: Harness) -> None:
    """A member's name may not repeat another step's."""
    with pytest.raises(ValueError, match="unique"):
        Saga(SAGA, [harness.step("a"), Parallel(harness.step("b"), harness.step("a"))])


# -- going forward ----------------------------------------------------------------------------


async def test_members_of_a_group_run_concurrently(harness: Harness) -> None:
    """Each member waits for an event only its sibling sets: both must be running at once."""
    b_in, c_in = asyncio.Event(), asyncio.Event()
    orch = harness.orchestrator(
        harness.step("a", result="a done"),
        Parallel(
            Meeting("b", harness.journal, b_in, c_in), Meeting("c", harness.journal, c_in, b_in)
        ),
        harness.step("d"),
    )

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPLETED
    assert statuses(done) == [S.SUCCEEDED] * 4
    assert [s.attempts for s in done.steps] == [1, 1, 1, 1]
    assert harness.journal.count("do", "d") == 1
    assert harness.journal.compensated() == []
    (d_ctx,) = harness.journal.of("do", "d")
    assert d_ctx.results == {"a": "a done", "b": "b done", "c": "c done"}
    # A member sees the steps before its group, not its sibling.
    assert all(ctx.results == {"a": "a done"} for ctx in harness.journal.of("do", "b"))


async def test_group_starts_in_one_write_and_the_next_step_after_the_last_member(
    harness: Harness,
) -> None:
    """ "a succeeded" starts b and c together; the last of b and c to succeed starts d."""
    orch = harness.orchestrator(
        harness.step("a"), Parallel(harness.step("b"), harness.step("c")), harness.step("d")
    )
    writes: list[list[tuple[str, str | None]]] = []

    def listen(instance: SagaInstance, events: Sequence[SagaEvent]) -> None:
        writes.append([(e.type, e.step) for e in events])

    orch.listeners.append(listen)

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPLETED
    assert [("step_succeeded", "a"), ("step_started", "b"), ("step_started", "c")] in writes
    last = next(w for w in writes if ("step_started", "d") in w)
    assert last[0] in (("step_succeeded", "b"), ("step_succeeded", "c"))
    assert sum(("step_started", "d") in w for w in writes) == 1
    history = await harness.types(done.saga_id)
    assert history[0] == ("saga_started", "a")
    assert history[-2:] == [("step_succeeded", "d"), ("saga_completed", None)]
    assert history.index(("step_started", "d")) > max(
        history.index(("step_succeeded", "b")), history.index(("step_succeeded", "c"))
    )


async def test_a_first_group_that_is_parallel_starts_every_member_with_the_saga(
    harness: Harness,
) -> None:
    """``start`` records both members of a leading group as running before either runs."""
    b, c = Gated("b", harness.journal), Gated("c", harness.journal)
    orch = harness.orchestrator(Parallel(b, c), harness.step("d"))

    started = await orch.start(SAGA, {"order_id": "o-1"})
    stored = await harness.store.get(started.instance.saga_id)
    assert stored is not None
    assert statuses(stored) == [S.RUNNING, S.RUNNING, S.PENDING]
    assert [s.attempts for s in stored.steps] == [1, 1, 0]
    await asyncio.wait_for(b.entered.wait(), 5.0)
    await asyncio.wait_for(c.entered.wait(), 5.0)
    b.gate.set()
    c.gate.set()
    done = await orch.wait(started.instance.saga_id, timeout=5.0)

    assert done.status is SagaStatus.COMPLETED
    assert statuses(done) == [S.SUCCEEDED] * 3
    assert harness.journal.count("do", "d") == 1


# -- compensating -----------------------------------------------------------------------------


async def test_refused_member_compensates_its_succeeded_sibling_and_earlier_steps(
    harness: Harness,
) -> None:
    """b refuses after c succeeded: c then a are compensated, b (nothing applied) is not."""
    c = After("c", harness.journal, result="c done")
    b = After("b", harness.journal, after=[c.entered], fails=[StepFailed("no stock")])
    orch = harness.orchestrator(harness.step("a"), Parallel(b, c), harness.step("d"))

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPENSATED
    assert (done.error, done.failed_step) == ("no stock", "b")
    assert harness.journal.compensated() == ["c", "a"]
    assert statuses(done) == [S.COMPENSATED, S.FAILED, S.COMPENSATED, S.PENDING]
    assert harness.journal.count("do", "b") == 1  # a refusal is not retried
    assert harness.journal.count("do", "d") == 0
    (undo_c,) = harness.journal.of("compensate", "c")
    assert undo_c.result == "c done"


async def test_member_out_of_retries_is_compensated_with_its_sibling(harness: Harness) -> None:
    """b keeps failing until its policy runs out: c, b and a are compensated, newest first."""
    orch = harness.orchestrator(
        harness.step("a"),
        Parallel(
            harness.step("b", fails=[ConnectionError("down")] * 3, attempts=3),
            harness.step("c"),
        ),
        harness.step("d"),
    )

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPENSATED
    assert done.failed_step == "b"
    assert harness.journal.count("do", "b") == 3
    assert harness.journal.count("do", "d") == 0
    assert harness.journal.compensated() == ["c", "b", "a"]
    assert statuses(done) == [S.COMPENSATED] * 3 + [S.PENDING]


async def test_two_members_failing_keep_the_first_reason(harness: Harness) -> None:
    """c, mid-action when b refused, refuses too: compensation starts once, for b's reason."""
    b_refused = asyncio.Event()

    def listen(instance: SagaInstance, events: Sequence[SagaEvent]) -> None:
        if any((e.type, e.step) == ("step_failed", "b") for e in events):
            b_refused.set()

    c = After("c", harness.journal, after=[b_refused], fails=[StepFailed("second")])
    b = After("b", harness.journal, after=[c.entered], fails=[StepFailed("first")])
    orch = harness.orchestrator(harness.step("a"), Parallel(b, c))
    orch.listeners.append(listen)

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPENSATED
    assert (done.error, done.failed_step) == ("first", "b")
    assert harness.journal.compensated() == ["a"]
    history = await harness.types(done.saga_id)
    assert history.count(("compensation_started", "b")) == 1
    assert statuses(done) == [S.COMPENSATED, S.FAILED, S.FAILED]


# -- crashes ----------------------------------------------------------------------------------


async def _crash(harness: Harness, *steps: Step | Parallel, probe: str, at: str) -> str:
    """Start a saga whose driver dies at ``probe`` of ``at``; the saga's id, its lease run out."""
    crashing = harness.orchestrator(*steps, lease_seconds=0.05, probe=crash_at(probe, at))
    started = await crashing.start(SAGA, {"order_id": "o-1"})
    with pytest.raises(Crash):
        await crashing.drive(started.instance)
    await asyncio.sleep(0.1)  # let the dead driver's lease run out
    return started.instance.saga_id


async def test_crash_inside_a_group_reruns_its_unfinished_members_with_the_same_keys(
    harness: Harness,
) -> None:
    """b's driver dies after b acted while c is still in its action: both rerun elsewhere."""
    gated = Gated("c", harness.journal)
    saga_id = await _crash(
        harness,
        harness.step("a", result="charged"),
        Parallel(harness.step("b"), gated),
        harness.step("d"),
        probe="after_do",
        at="b",
    )
    stranded = await harness.store.get(saga_id)
    assert stranded is not None
    assert stranded.status is SagaStatus.RUNNING
    assert statuses(stranded) == [S.SUCCEEDED, S.RUNNING, S.RUNNING, S.PENDING]

    rescuer = harness.orchestrator(
        harness.step("a"),
        Parallel(harness.step("b"), harness.step("c")),
        harness.step("d"),
        owner="worker-b",
    )
    assert await rescuer.recover() == 1
    done = await rescuer.wait(saga_id, timeout=5.0)

    assert done.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "a") == 1
    assert harness.journal.count("do", "d") == 1
    for name in ("b", "c"):
        runs = harness.journal.of("do", name)
        assert len(runs) == 2
        assert runs[0].idempotency_key == runs[1].idempotency_key == f"{saga_id}:{name}"
        assert runs[1].results == {"a": "charged"}
    assert [s.attempts for s in done.steps] == [1, 2, 2, 1]


async def test_crash_after_one_member_succeeded_reruns_only_the_other(harness: Harness) -> None:
    """c's success is durable when b's driver dies after b acted: only b runs again."""
    c_recorded = asyncio.Event()

    def listen(instance: SagaInstance, events: Sequence[SagaEvent]) -> None:
        if any((e.type, e.step) == ("step_succeeded", "c") for e in events):
            c_recorded.set()

    crashing = harness.orchestrator(
        harness.step("a"),
        Parallel(After("b", harness.journal, after=[c_recorded]), harness.step("c")),
        harness.step("d"),
        lease_seconds=0.05,
        probe=crash_at("after_do", "b"),
    )
    crashing.listeners.append(listen)
    started = await crashing.start(SAGA, {"order_id": "o-1"})
    with pytest.raises(Crash):
        await crashing.drive(started.instance)
    await asyncio.sleep(0.1)
    stranded = await harness.store.get(started.instance.saga_id)
    assert stranded is not None
    assert statuses(stranded) == [S.SUCCEEDED, S.RUNNING, S.SUCCEEDED, S.PENDING]

    rescuer = harness.orchestrator(
        harness.step("a"),
        Parallel(harness.step("b"), harness.step("c")),
        harness.step("d"),
        owner="worker-b",
    )
    assert await rescuer.recover() == 1
    done = await rescuer.wait(started.instance.saga_id, timeout=5.0)

    assert done.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "c") == 1
    assert harness.journal.count("do", "d") == 1
    runs_of_b = harness.journal.of("do", "b")
    assert len(runs_of_b) == 2
    assert runs_of_b[0].idempotency_key == runs_of_b[1].idempotency_key
    assert [s.attempts for s in done.steps] == [1, 2, 1, 1]


async def test_crash_during_compensation_of_a_group_resumes_backward(harness: Harness) -> None:
    """d refuses after b and c succeeded; the driver dies after undoing c; recovery finishes.

    Within the group, compensation runs in reverse step order: c, then b, then a.
    """
    b = After("b", harness.journal)
    c = After("c", harness.journal)
    d = After("d", harness.journal, after=[b.entered, c.entered], fails=[StepFailed("no")])
    saga_id = await _crash(
        harness, harness.step("a"), Parallel(b, c, d), probe="after_compensate", at="c"
    )
    stranded = await harness.store.get(saga_id)
    assert stranded is not None
    assert stranded.status is SagaStatus.COMPENSATING

    rescuer = harness.orchestrator(
        harness.step("a"),
        Parallel(harness.step("b"), harness.step("c"), harness.step("d")),
        owner="worker-b",
    )
    assert await rescuer.recover() == 1
    done = await rescuer.wait(saga_id, timeout=5.0)

    assert done.status is SagaStatus.COMPENSATED
    assert (done.error, done.failed_step) == ("no", "d")
    assert harness.journal.compensated() == ["c", "c", "b", "a"]
    undo_c = harness.journal.of("compensate", "c")
    assert undo_c[0].idempotency_key == undo_c[1].idempotency_key
    assert statuses(done) == [S.COMPENSATED, S.COMPENSATED, S.COMPENSATED, S.FAILED]
    assert harness.journal.count("do", "b") == harness.journal.count("do", "c") == 1


# -- local actions ----------------------------------------------------------------------------


async def _run_local(store: LocalStore, *steps: Step | Parallel) -> SagaInstance:
    orch = SagaOrchestrator(store, [Saga("local", list(steps))], sleep=_no_wait)
    try:
        started = await orch.start("local", {})
        return await orch.wait(started.instance.saga_id, timeout=10.0)
    finally:
        await orch.shutdown()


async def test_local_actions_in_a_group_roll_back_only_their_own_rows(db_store: LocalStore) -> None:
    """A member's local action that errors is retried without undoing its sibling's success."""
    done = await _run_local(
        db_store, Effect("a"), Parallel(Effect("b", errors=2), Effect("c")), Effect("d")
    )

    assert done.status is SagaStatus.COMPLETED
    assert [s.attempts for s in done.steps] == [1, 3, 1, 1]
    assert [s.result for s in done.steps] == [{"key": f"{done.saga_id}:{name}"} for name in "abcd"]
    assert await effects(db_store) == [f"{done.saga_id}:{name}" for name in "abcd"]


async def test_local_refusal_in_a_group_compensates_the_others(db_store: LocalStore) -> None:
    """A member's local refusal keeps its record; its sibling and the steps before are undone."""
    first, refusing, sibling = Effect("a"), Effect("b", refuse=True), Effect("c")
    done = await _run_local(db_store, first, Parallel(refusing, sibling), Effect("d"))

    assert done.status is SagaStatus.COMPENSATED
    assert (done.error, done.failed_step) == ("b refused", "b")
    assert [s.status for s in done.steps] == [S.COMPENSATED, S.FAILED, S.COMPENSATED, S.PENDING]
    assert refusing.compensated == []
    assert sibling.compensated == [f"{done.saga_id}:c"]
    assert first.compensated == [f"{done.saga_id}:a"]
