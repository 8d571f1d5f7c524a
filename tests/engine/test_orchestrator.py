"""The orchestrator's rules (docs/semantics.md), each in its own test, against every store."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest

from sagakit.errors import InvalidTransition, LeaseLost, SagaNotFound, StepFailed
from sagakit.orchestrator import Probe, SagaOrchestrator
from sagakit.records import JSON, JSONObject, SagaInstance, SagaStatus, StepStatus, Transition
from sagakit.retry import RetryPolicy
from sagakit.saga import Parallel, Saga, Step, StepContext
from sagakit.store import SagaStore

SAGA = "order"


class Crash(Exception):
    """Stands in for the process dying at a probe point."""


@dataclass(frozen=True, slots=True)
class Call:
    """One call of a step's ``do`` or ``compensate``, with the context it was given."""

    kind: str
    ctx: StepContext


class Journal:
    """Every call the test's steps received, in order: the test's effect counter."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def of(self, kind: str, step: str) -> list[StepContext]:
        """The contexts of every ``kind`` call ("do" or "compensate") of ``step``."""
        return [c.ctx for c in self.calls if c.kind == kind and c.ctx.step == step]

    def count(self, kind: str, step: str) -> int:
        """How often ``step``'s ``kind`` ran."""
        return len(self.of(kind, step))

    def compensated(self) -> list[str]:
        """The steps whose compensation ran, in the order it ran (retries included)."""
        return [c.ctx.step for c in self.calls if c.kind == "compensate"]


class Scripted(Step):
    """A step whose first calls raise the scripted exceptions and later ones succeed."""

    def __init__(
        self,
        name: str,
        journal: Journal,
        *,
        fails: Sequence[Exception] = (),
        compensation_fails: Sequence[Exception] = (),
        result: JSON = None,
        attempts: int = 3,
        compensation_attempts: int = 5,
        timeout: float | None = 5.0,
    ) -> None:
        self.name = name
        self.journal = journal
        self.fails = list(fails)
        self.compensation_fails = list(compensation_fails)
        self.result = result
        self.retry = RetryPolicy(max_attempts=attempts, initial_delay=0.001, max_delay=0.01)
        self.compensation_retry = RetryPolicy(
            max_attempts=compensation_attempts, initial_delay=0.001, max_delay=0.01
        )
        self.timeout = timeout

    async def do(self, ctx: StepContext) -> JSON:
        self.journal.calls.append(Call("do", ctx))
        if self.fails:
            raise self.fails.pop(0)
        return self.result

    async def compensate(self, ctx: StepContext) -> None:
        self.journal.calls.append(Call("compensate", ctx))
        if self.compensation_fails:
            raise self.compensation_fails.pop(0)


class Gated(Scripted):
    """A step whose ``do`` waits until the test opens its gate."""

    def __init__(self, name: str, journal: Journal) -> None:
        super().__init__(name, journal)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def do(self, ctx: StepContext) -> JSON:
        self.journal.calls.append(Call("do", ctx))
        self.entered.set()
        await self.gate.wait()
        return f"{self.name} done"


class Sleeper:
    """Stands in for ``asyncio.sleep`` in backoff: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def crash_at(point: str, step: str) -> Probe:
    """A probe that kills the driver the first time it reaches ``point`` of ``step``."""
    fired: list[bool] = []

    def probe(at: str, name: str) -> None:
        if (at, name) == (point, step) and not fired:
            fired.append(True)
            raise Crash(f"{point} {step}")

    return probe


def quiet(point: str, step: str) -> None:
    """A probe that does nothing."""


class Harness:
    """One test's store, journal, backoff sleeper and orchestrators (shut down at the end)."""

    def __init__(self, store: SagaStore) -> None:
        self.store = store
        self.journal = Journal()
        self.sleeper = Sleeper()
        self._made: list[SagaOrchestrator] = []
        #: A scripted step recording into this test's journal: ``step("a", fails=[...])``.
        self.step = functools.partial(Scripted, journal=self.journal)

    def orchestrator(
        self,
        *steps: Step | Parallel,
        owner: str = "worker-a",
        lease_seconds: float = 15.0,
        probe: Probe = quiet,
    ) -> SagaOrchestrator:
        """An orchestrator of the saga made of ``steps``, with backoff that never waits."""
        orch = SagaOrchestrator(
            self.store,
            [Saga(SAGA, list(steps))],
            owner=owner,
            lease_seconds=lease_seconds,
            sleep=self.sleeper,
            probe=probe,
        )
        self._made.append(orch)
        return orch

    async def run(
        self, orch: SagaOrchestrator, input: JSONObject | None = None, key: str | None = None
    ) -> SagaInstance:
        """Start a saga and wait for its end."""
        started = await orch.start(SAGA, input or {"order_id": "o-1"}, business_key=key)
        return await orch.wait(started.instance.saga_id, timeout=5.0)

    async def types(self, saga_id: str) -> list[tuple[str, str | None]]:
        """The saga's history as (event type, step) pairs."""
        return [(e.type, e.step) for e in await self.store.events(saga_id)]

    async def close(self) -> None:
        for orch in self._made:
            await orch.shutdown(grace=2.0)


@pytest.fixture
async def harness(store: SagaStore) -> AsyncIterator[Harness]:
    """A harness on each backend in turn."""
    made = Harness(store)
    try:
        yield made
    finally:
        await made.close()


def statuses(instance: SagaInstance) -> list[StepStatus]:
    """The instance's step statuses, in step order."""
    return [s.status for s in instance.steps]


# -- success ----------------------------------------------------------------------------------


async def test_saga_whose_steps_all_succeed_completes_without_compensating(
    harness: Harness,
) -> None:
    """Every action runs once in order, nothing is compensated, the saga ends ``completed``."""
    orch = harness.orchestrator(
        harness.step("a", result=1), harness.step("b", result=2), harness.step("c", result=3)
    )

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPLETED
    assert [c.ctx.step for c in harness.journal.calls] == ["a", "b", "c"]
    assert harness.journal.compensated() == []
    assert statuses(done) == [StepStatus.SUCCEEDED] * 3
    assert [s.attempts for s in done.steps] == [1, 1, 1]
    assert (done.error, done.failed_step) == (None, None)


async def test_completed_saga_records_its_events_in_order(harness: Harness) -> None:
    """A successful run records start, each step's success and the next's start, then the end."""
    orch = harness.orchestrator(harness.step("a"), harness.step("b"), harness.step("c"))

    done = await harness.run(orch)

    assert await harness.types(done.saga_id) == [
        ("saga_started", "a"),
        ("step_succeeded", "a"),
        ("step_started", "b"),
        ("step_succeeded", "b"),
        ("step_started", "c"),
        ("step_succeeded", "c"),
        ("saga_completed", None),
    ]


async def test_finished_saga_gives_up_its_lease(harness: Harness) -> None:
    """When the saga ends, no owner holds it any more."""
    orch = harness.orchestrator(harness.step("a"))

    done = await harness.run(orch)

    stored = await harness.store.get(done.saga_id)
    assert stored is not None
    assert (stored.owner, stored.lease_until) == (None, None)
    assert orch.driving == frozenset()


async def test_wait_returns_the_finished_instance_as_the_store_has_it(harness: Harness) -> None:
    """``wait`` on a saga this process drove answers the stored instance, lease included."""
    orch = harness.orchestrator(harness.step("a"), harness.step("b"))

    done = await harness.run(orch)

    assert done == await harness.store.get(done.saga_id)


async def test_step_start_is_durable_before_its_action_runs(harness: Harness) -> None:
    """When a step's action runs, the store already shows it running and its predecessor done."""
    seen: list[SagaInstance | None] = []

    class Inspecting(Scripted):
        async def do(self, ctx: StepContext) -> JSON:
            seen.append(await harness.store.get(ctx.saga_id))
            return await super().do(ctx)

    orch = harness.orchestrator(
        harness.step("a", result={"n": 1}), Inspecting("b", harness.journal)
    )

    await harness.run(orch)

    (during_b,) = seen
    assert during_b is not None
    assert statuses(during_b) == [StepStatus.SUCCEEDED, StepStatus.RUNNING]
    assert during_b.steps[0].result == {"n": 1}
    assert during_b.steps[1].attempts == 1


# -- business failure -------------------------------------------------------------------------


async def test_business_failure_at_first_step_compensates_nothing(harness: Harness) -> None:
    """A rejected first step leaves nothing to undo; the saga ends ``compensated``."""
    orch = harness.orchestrator(
        harness.step("a", fails=[StepFailed("Insufficient balance")]),
        harness.step("b"),
        harness.step("c"),
    )

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPENSATED
    assert harness.journal.compensated() == []
    assert harness.journal.count("do", "a") == 1
    assert harness.journal.count("do", "b") == 0
    assert statuses(done) == [StepStatus.FAILED, StepStatus.PENDING, StepStatus.PENDING]
    assert (done.error, done.failed_step) == ("Insufficient balance", "a")


async def test_business_failure_at_second_step_compensates_only_the_first(harness: Harness) -> None:
    """The rejected step is not compensated; the one before it is."""
    orch = harness.orchestrator(
        harness.step("a"), harness.step("b", fails=[StepFailed("Not enough stock")])
    )

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPENSATED
    assert harness.journal.compensated() == ["a"]
    assert harness.journal.count("do", "b") == 1
    assert statuses(done) == [StepStatus.COMPENSATED, StepStatus.FAILED]
    assert (done.error, done.failed_step) == ("Not enough stock", "b")


async def test_business_failure_at_third_step_compensates_earlier_steps_newest_first(
    harness: Harness,
) -> None:
    """Both earlier steps are compensated, the second before the first, the third never."""
    orch = harness.orchestrator(
        harness.step("a"),
        harness.step("b"),
        harness.step("c", fails=[StepFailed("Invalid shipping address")]),
    )

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPENSATED
    assert harness.journal.compensated() == ["b", "a"]
    assert statuses(done) == [StepStatus.COMPENSATED, StepStatus.COMPENSATED, StepStatus.FAILED]
    assert (done.error, done.failed_step) == ("Invalid shipping address", "c")


async def test_business_failure_is_never_retried(harness: Harness) -> None:
    """A ``StepFailed`` ends the step at once, whatever its retry policy allows."""
    orch = harness.orchestrator(harness.step("a", fails=[StepFailed("no")], attempts=5))

    done = await harness.run(orch)

    assert harness.journal.count("do", "a") == 1
    assert done.steps[0].attempts == 1
    assert harness.sleeper.delays == []


async def test_compensated_saga_records_its_events_in_order(harness: Harness) -> None:
    """A rejection records the failure, the compensation's start, each undo, then the end."""
    orch = harness.orchestrator(
        harness.step("a"), harness.step("b", fails=[StepFailed("no")]), harness.step("c")
    )

    done = await harness.run(orch)

    assert await harness.types(done.saga_id) == [
        ("saga_started", "a"),
        ("step_succeeded", "a"),
        ("step_started", "b"),
        ("step_failed", "b"),
        ("compensation_started", "b"),
        ("compensation_attempt", "a"),
        ("compensation_succeeded", "a"),
        ("saga_compensated", None),
    ]


# -- transient failure ------------------------------------------------------------------------


async def test_transient_failure_then_success_retries_and_counts_attempts(harness: Harness) -> None:
    """Two transient errors then a success: three attempts, two backoff waits, ``completed``."""
    orch = harness.orchestrator(
        harness.step("a"), harness.step("b", fails=[ConnectionError("down"), RuntimeError("flaky")])
    )

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "b") == 3
    assert [ctx.attempt for ctx in harness.journal.of("do", "b")] == [1, 2, 3]
    assert [s.attempts for s in done.steps] == [1, 3]
    assert done.steps[1].error is None
    assert harness.journal.compensated() == []
    assert len(harness.sleeper.delays) == 2
    retries = [e for e in await harness.store.events(done.saga_id) if e.type == "step_retry"]
    assert [(e.step, e.attempt) for e in retries] == [("b", 1), ("b", 2)]
    assert "ConnectionError: down" in (retries[0].detail or "")


async def test_idempotency_key_is_the_same_across_attempts_and_differs_between_steps(
    harness: Harness,
) -> None:
    """Every attempt of a step sees one key; another step or saga sees another."""
    orch = harness.orchestrator(
        harness.step("a", fails=[RuntimeError(), RuntimeError()]), harness.step("b")
    )

    first = await harness.run(orch, key="o-1")
    second = await harness.run(orch, key="o-2")

    keys_a = [ctx.idempotency_key for ctx in harness.journal.of("do", "a")]
    keys_b = [ctx.idempotency_key for ctx in harness.journal.of("do", "b")]
    assert first.saga_id != second.saga_id
    assert len(keys_a) == 4  # three attempts in the first saga, one in the second
    assert keys_a[0] == keys_a[1] == keys_a[2]
    assert keys_a[3] != keys_a[0]
    assert keys_b[0] not in keys_a
    assert keys_b[0] != keys_b[1]


async def test_retries_exhausted_compensate_that_step_then_earlier_ones(harness: Harness) -> None:
    """When retries run out, the step's unknown effect is undone first, then the steps before."""
    orch = harness.orchestrator(
        harness.step("a"),
        harness.step("b"),
        harness.step("c", fails=[RuntimeError("down")] * 3, attempts=3),
    )

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPENSATED
    assert harness.journal.count("do", "c") == 3
    assert harness.journal.compensated() == ["c", "b", "a"]
    assert statuses(done) == [StepStatus.COMPENSATED] * 3
    assert done.failed_step == "c"
    assert done.error == "RuntimeError: down"
    assert harness.journal.of("compensate", "c")[0].result is None
    assert ("step_exhausted", "c") in await harness.types(done.saga_id)


async def test_retries_exhausted_at_first_step_compensates_that_step(harness: Harness) -> None:
    """Even a first step whose retries ran out is compensated, since it may have applied."""
    orch = harness.orchestrator(
        harness.step("a", fails=[TimeoutError()] * 2, attempts=2), harness.step("b")
    )

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPENSATED
    assert harness.journal.compensated() == ["a"]
    assert harness.journal.count("do", "b") == 0
    assert statuses(done) == [StepStatus.COMPENSATED, StepStatus.PENDING]


async def test_step_timeout_is_retried_like_a_transient_failure(harness: Harness) -> None:
    """An attempt that outlives ``Step.timeout`` is abandoned and retried."""

    class Slow(Scripted):
        async def do(self, ctx: StepContext) -> JSON:
            self.journal.calls.append(Call("do", ctx))
            if ctx.attempt == 1:
                await asyncio.sleep(10)
            return "fast enough"

    orch = harness.orchestrator(Slow("a", harness.journal, timeout=0.05))

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPLETED
    assert done.steps[0].attempts == 2
    assert done.steps[0].result == "fast enough"
    retry = [e for e in await harness.store.events(done.saga_id) if e.type == "step_retry"]
    assert len(retry) == 1
    assert "timed out" in (retry[0].detail or "")


async def test_step_timing_out_every_attempt_is_compensated(harness: Harness) -> None:
    """A step that always times out is treated as an unknown outcome and compensated."""

    class Stuck(Scripted):
        async def do(self, ctx: StepContext) -> JSON:
            self.journal.calls.append(Call("do", ctx))
            await asyncio.sleep(10)
            return None

    orch = harness.orchestrator(
        harness.step("a"), Stuck("b", harness.journal, timeout=0.02, attempts=2)
    )

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPENSATED
    assert harness.journal.count("do", "b") == 2
    assert harness.journal.compensated() == ["b", "a"]
    assert done.error == "step timed out"


# -- compensation -----------------------------------------------------------------------------


async def test_failing_compensation_is_retried_until_it_succeeds(harness: Harness) -> None:
    """A compensation that fails twice runs a third time and the saga ends ``compensated``."""
    orch = harness.orchestrator(
        harness.step(
            "a", compensation_fails=[RuntimeError("refund down")] * 2, compensation_attempts=5
        ),
        harness.step("b", fails=[StepFailed("no")]),
    )

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPENSATED
    assert harness.journal.compensated() == ["a", "a", "a"]
    assert done.steps[0].compensation_attempts == 3
    assert done.steps[0].status is StepStatus.COMPENSATED
    assert len(harness.sleeper.delays) == 2
    kinds = [t for t, _ in await harness.types(done.saga_id)]
    assert kinds.count("compensation_retry") == 2


async def test_compensation_timeout_is_retried(harness: Harness) -> None:
    """A compensation that outlives the step's timeout is retried like any failure."""

    class SlowUndo(Scripted):
        async def compensate(self, ctx: StepContext) -> None:
            self.journal.calls.append(Call("compensate", ctx))
            if ctx.attempt == 1:
                await asyncio.sleep(10)

    orch = harness.orchestrator(
        SlowUndo("a", harness.journal, timeout=0.05), harness.step("b", fails=[StepFailed("x")])
    )

    done = await harness.run(orch)

    assert done.status is SagaStatus.COMPENSATED
    assert [ctx.attempt for ctx in harness.journal.of("compensate", "a")] == [1, 2]


async def test_compensation_exhausted_ends_the_saga_failed(harness: Harness) -> None:
    """When a compensation's policy runs out the saga ends ``failed``, the step still to undo."""
    orch = harness.orchestrator(
        harness.step(
            "a", compensation_fails=[RuntimeError("refund down")] * 3, compensation_attempts=3
        ),
        harness.step("b", fails=[StepFailed("no")]),
    )

    done = await harness.run(orch)

    assert done.status is SagaStatus.FAILED
    assert harness.journal.count("compensate", "a") == 3
    assert done.steps[0].status is StepStatus.COMPENSATING
    assert done.error is not None
    assert "refund down" in done.error
    stored = await harness.store.get(done.saga_id)
    assert stored is not None
    assert stored.status is SagaStatus.FAILED
    assert stored.owner is None
    assert (await harness.types(done.saga_id))[-2:] == [
        ("compensation_failed", "a"),
        ("saga_failed", "a"),
    ]


async def test_operator_retry_of_a_failed_saga_resumes_compensation_to_compensated(
    harness: Harness,
) -> None:
    """After the participant recovers, ``retry`` finishes the compensation where it stopped."""
    orch = harness.orchestrator(
        harness.step(
            "a", compensation_fails=[RuntimeError("refund down")] * 2, compensation_attempts=2
        ),
        harness.step("b"),
        harness.step("c", fails=[StepFailed("no")]),
    )
    failed = await harness.run(orch)
    assert failed.status is SagaStatus.FAILED
    assert harness.journal.compensated() == ["b", "a", "a"]

    reopened = await orch.retry(failed.saga_id, actor="alice")
    done = await orch.wait(failed.saga_id, timeout=5.0)

    assert reopened.status is SagaStatus.COMPENSATING
    assert done.status is SagaStatus.COMPENSATED
    assert harness.journal.compensated() == ["b", "a", "a", "a"]  # b is not undone twice
    assert statuses(done) == [StepStatus.COMPENSATED, StepStatus.COMPENSATED, StepStatus.FAILED]
    events = await harness.store.events(failed.saga_id)
    retry = [e for e in events if e.type == "operator_retry"]
    assert len(retry) == 1
    assert "alice" in (retry[0].detail or "")
    assert events[-1].type == "saga_compensated"


async def test_operator_retry_gives_the_compensation_a_fresh_attempt_budget(
    harness: Harness,
) -> None:
    """A retried compensation may fail again and still be retried under its policy."""
    orch = harness.orchestrator(
        harness.step("a", compensation_fails=[RuntimeError("down")] * 3, compensation_attempts=2),
        harness.step("b", fails=[StepFailed("no")]),
    )
    failed = await harness.run(orch)
    assert failed.status is SagaStatus.FAILED

    await orch.retry(failed.saga_id)
    done = await orch.wait(failed.saga_id, timeout=5.0)

    assert done.status is SagaStatus.COMPENSATED
    assert harness.journal.count("compensate", "a") == 4
    assert done.steps[0].compensation_attempts == 2


async def test_operator_retry_of_a_saga_that_has_not_failed_raises_invalid_transition(
    harness: Harness,
) -> None:
    """Only a ``failed`` saga can be retried; a completed one is refused and left as it is."""
    orch = harness.orchestrator(harness.step("a"))
    done = await harness.run(orch)

    with pytest.raises(InvalidTransition):
        await orch.retry(done.saga_id)

    stored = await harness.store.get(done.saga_id)
    assert stored is not None
    assert stored.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "a") == 1


async def test_operator_retry_of_an_unknown_saga_raises_saga_not_found(harness: Harness) -> None:
    """Retrying an id nobody started says so."""
    orch = harness.orchestrator(harness.step("a"))

    with pytest.raises(SagaNotFound):
        await orch.retry("no-such-saga")


# -- results ----------------------------------------------------------------------------------


async def test_results_flow_to_later_steps_and_to_the_steps_own_compensation(
    harness: Harness,
) -> None:
    """Later steps read earlier results; a step's compensation reads its own result."""
    orch = harness.orchestrator(
        harness.step("payment", result={"charge_id": "ch_1"}),
        harness.step("inventory", result=["r-1", "r-2"]),
        harness.step("shipping", fails=[StepFailed("Invalid shipping address")]),
    )

    done = await harness.run(orch, input={"order_id": "o-9", "total": 20})

    (payment,) = harness.journal.of("do", "payment")
    (inventory,) = harness.journal.of("do", "inventory")
    (shipping,) = harness.journal.of("do", "shipping")
    assert payment.results == {}
    assert inventory.results == {"payment": {"charge_id": "ch_1"}}
    assert shipping.results == {"payment": {"charge_id": "ch_1"}, "inventory": ["r-1", "r-2"]}
    assert shipping.input == {"order_id": "o-9", "total": 20}
    (refund,) = harness.journal.of("compensate", "payment")
    (release,) = harness.journal.of("compensate", "inventory")
    assert refund.result == {"charge_id": "ch_1"}
    assert release.result == ["r-1", "r-2"]
    assert done.steps[0].result == {"charge_id": "ch_1"}


# -- business key -----------------------------------------------------------------------------


async def test_same_business_key_while_running_returns_the_running_instance(
    harness: Harness,
) -> None:
    """A second start for a key whose saga is still running starts nothing new."""
    gated = Gated("a", harness.journal)
    orch = harness.orchestrator(gated, harness.step("b"))
    first = await orch.start(SAGA, {"order_id": "o-1"}, business_key="o-1")
    await asyncio.wait_for(gated.entered.wait(), 5.0)

    again = await orch.start(SAGA, {"order_id": "o-1"}, business_key="o-1")
    gated.gate.set()
    done = await orch.wait(first.instance.saga_id, timeout=5.0)

    assert first.created
    assert not again.created
    assert again.instance.saga_id == first.instance.saga_id
    assert again.instance.status is SagaStatus.RUNNING
    assert done.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "a") == 1
    assert harness.journal.count("do", "b") == 1


async def test_same_business_key_after_completion_returns_the_completed_instance(
    harness: Harness,
) -> None:
    """A completed saga's key never starts a second run: its effects are not repeated."""
    orch = harness.orchestrator(harness.step("a"))
    done = await harness.run(orch, key="o-1")

    again = await orch.start(SAGA, {"order_id": "o-1"}, business_key="o-1")

    assert not again.created
    assert again.instance.saga_id == done.saga_id
    assert again.instance.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "a") == 1


async def test_same_business_key_after_failure_returns_the_failed_instance(
    harness: Harness,
) -> None:
    """A ``failed`` saga keeps its key until an operator has dealt with it."""
    orch = harness.orchestrator(
        harness.step("a", compensation_fails=[RuntimeError()] * 2, compensation_attempts=2),
        harness.step("b", fails=[StepFailed("no")]),
    )
    failed = await harness.run(orch, key="o-1")
    assert failed.status is SagaStatus.FAILED

    again = await orch.start(SAGA, {"order_id": "o-1"}, business_key="o-1")

    assert not again.created
    assert again.instance.saga_id == failed.saga_id
    assert again.instance.status is SagaStatus.FAILED
    assert harness.journal.count("do", "a") == 1


async def test_same_business_key_after_compensation_starts_a_new_instance(harness: Harness) -> None:
    """A compensated saga frees its key: the next start creates and runs a new saga."""
    orch = harness.orchestrator(harness.step("a", fails=[StepFailed("Insufficient balance")]))
    compensated = await harness.run(orch, key="o-1")
    assert compensated.status is SagaStatus.COMPENSATED

    again = await orch.start(SAGA, {"order_id": "o-1"}, business_key="o-1")
    done = await orch.wait(again.instance.saga_id, timeout=5.0)

    assert again.created
    assert again.instance.saga_id != compensated.saga_id
    assert done.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "a") == 2


async def test_concurrent_starts_with_one_business_key_run_the_saga_once(harness: Harness) -> None:
    """Racing starts for one key create one saga, whose step runs once."""
    orch = harness.orchestrator(harness.step("a"))

    results = await asyncio.gather(
        *(orch.start(SAGA, {"order_id": "o-1"}, business_key="o-1") for _ in range(5))
    )
    done = await orch.wait(results[0].instance.saga_id, timeout=5.0)

    assert [r.created for r in results].count(True) == 1
    assert {r.instance.saga_id for r in results} == {done.saga_id}
    assert done.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "a") == 1


# -- crash recovery and fencing ---------------------------------------------------------------


async def test_crash_after_an_action_reruns_that_step_with_the_same_key_on_recovery(
    harness: Harness,
) -> None:
    """A driver killed after ``b`` applied is resumed by another owner, which reruns ``b`` only."""
    crashing = harness.orchestrator(
        harness.step("a", result="charged"),
        harness.step("b"),
        harness.step("c"),
        lease_seconds=0.05,
        probe=crash_at("after_do", "b"),
    )
    started = await crashing.start(SAGA, {"order_id": "o-1"})
    with pytest.raises(Crash):
        await crashing.drive(started.instance)  # the task start() launched, still running
    stranded = await harness.store.get(started.instance.saga_id)
    assert stranded is not None
    assert stranded.status is SagaStatus.RUNNING
    await asyncio.sleep(0.1)  # let the dead driver's lease run out

    rescuer = harness.orchestrator(
        harness.step("a"), harness.step("b"), harness.step("c"), owner="worker-b"
    )
    recovered = await rescuer.recover()
    done = await rescuer.wait(started.instance.saga_id, timeout=5.0)

    assert recovered == 1
    assert done.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "a") == 1
    assert harness.journal.count("do", "c") == 1
    runs_of_b = harness.journal.of("do", "b")
    assert len(runs_of_b) == 2
    assert runs_of_b[0].idempotency_key == runs_of_b[1].idempotency_key
    assert runs_of_b[1].results == {"a": "charged"}
    assert done.steps[1].attempts == 2
    assert ("saga_claimed", None) in await harness.types(done.saga_id)


async def test_cancelled_driver_is_resumed_by_recovery_with_the_same_key(harness: Harness) -> None:
    """A driver cancelled mid-action is resumed elsewhere and the action runs again."""
    gated = Gated("a", harness.journal)
    stopped = harness.orchestrator(gated, harness.step("b"), lease_seconds=0.05)
    started = await stopped.start(SAGA, {"order_id": "o-1"})
    task = stopped.drive(started.instance)
    await asyncio.wait_for(gated.entered.wait(), 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gated.gate.set()
    await asyncio.sleep(0.1)

    rescuer = harness.orchestrator(gated, harness.step("b"), owner="worker-b")
    assert await rescuer.recover() == 1
    done = await rescuer.wait(started.instance.saga_id, timeout=5.0)

    assert done.status is SagaStatus.COMPLETED
    runs_of_a = harness.journal.of("do", "a")
    assert len(runs_of_a) == 2
    assert runs_of_a[0].idempotency_key == runs_of_a[1].idempotency_key
    assert harness.journal.count("do", "b") == 1


async def test_crash_during_compensation_resumes_backward_on_recovery(harness: Harness) -> None:
    """A driver killed after an undo is resumed compensating and finishes the compensation."""
    crashing = harness.orchestrator(
        harness.step("a"),
        harness.step("b"),
        harness.step("c", fails=[StepFailed("no")]),
        lease_seconds=0.05,
        probe=crash_at("after_compensate", "b"),
    )
    started = await crashing.start(SAGA, {"order_id": "o-1"})
    with pytest.raises(Crash):
        await crashing.drive(started.instance)
    await asyncio.sleep(0.1)

    rescuer = harness.orchestrator(
        harness.step("a"), harness.step("b"), harness.step("c"), owner="worker-b"
    )
    assert await rescuer.recover() == 1
    done = await rescuer.wait(started.instance.saga_id, timeout=5.0)

    assert done.status is SagaStatus.COMPENSATED
    assert harness.journal.count("do", "a") == 1  # never forward again
    assert harness.journal.count("do", "c") == 1
    assert harness.journal.compensated() == ["b", "b", "a"]
    undo_b = harness.journal.of("compensate", "b")
    assert undo_b[0].idempotency_key == undo_b[1].idempotency_key
    assert (done.error, done.failed_step) == ("no", "c")


async def test_recover_leaves_a_saga_with_a_live_lease_alone(harness: Harness) -> None:
    """Another worker cannot take a saga whose driver still holds its lease."""
    gated = Gated("a", harness.journal)
    owner = harness.orchestrator(gated, lease_seconds=30.0)
    started = await owner.start(SAGA, {"order_id": "o-1"})
    await asyncio.wait_for(gated.entered.wait(), 5.0)

    other = harness.orchestrator(gated, owner="worker-b")
    taken = await other.recover()
    gated.gate.set()
    done = await owner.wait(started.instance.saga_id, timeout=5.0)

    assert taken == 0
    assert done.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "a") == 1


async def test_old_owner_write_with_its_old_fence_raises_lease_lost_after_a_claim(
    harness: Harness,
) -> None:
    """Once another owner claims the saga, the first owner's transition is refused."""
    gated = Gated("a", harness.journal)
    first = harness.orchestrator(gated, lease_seconds=0.05)
    started = await first.start(SAGA, {"order_id": "o-1"})
    await asyncio.wait_for(gated.entered.wait(), 5.0)
    await asyncio.sleep(0.1)

    claimed = await harness.store.claim(
        started.instance.saga_id, owner="worker-b", lease_seconds=30.0
    )
    assert claimed is not None
    with pytest.raises(LeaseLost):
        await harness.store.transition(
            Transition(
                saga_id=started.instance.saga_id,
                fence=started.instance.fence,
                status=SagaStatus.COMPLETED,
                release=True,
            )
        )
    task = first.drive(started.instance)
    gated.gate.set()
    with pytest.raises(LeaseLost):
        await task

    stored = await harness.store.get(started.instance.saga_id)
    assert stored is not None
    assert stored.status is SagaStatus.RUNNING
    assert stored.owner == "worker-b"
    assert stored.steps[0].status is StepStatus.RUNNING


async def test_driver_that_lost_its_lease_stops_and_the_new_owner_finishes(
    harness: Harness,
) -> None:
    """The stale driver stops at its next write; the claimant completes the saga alone."""
    gated = Gated("a", harness.journal)
    first = harness.orchestrator(gated, harness.step("b"), lease_seconds=0.05)
    started = await first.start(SAGA, {"order_id": "o-1"})
    stale = first.drive(started.instance)
    await asyncio.wait_for(gated.entered.wait(), 5.0)
    await asyncio.sleep(0.1)

    second = harness.orchestrator(gated, harness.step("b"), owner="worker-b")
    assert await second.recover() == 1
    gated.gate.set()
    with pytest.raises(LeaseLost):
        await stale
    done = await second.wait(started.instance.saga_id, timeout=5.0)

    assert done.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "a") == 2
    assert harness.journal.count("do", "b") == 1
    assert await first.wait(started.instance.saga_id, timeout=5.0) == await harness.store.get(
        started.instance.saga_id
    )


async def test_resume_claims_and_finishes_a_saga_whose_lease_ran_out(harness: Harness) -> None:
    """``resume`` takes over one abandoned saga by id and drives it to its end."""
    gated = Gated("a", harness.journal)
    stopped = harness.orchestrator(gated, harness.step("b"), lease_seconds=0.05)
    started = await stopped.start(SAGA, {"order_id": "o-1"})
    task = stopped.drive(started.instance)
    await asyncio.wait_for(gated.entered.wait(), 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gated.gate.set()
    other = harness.orchestrator(gated, harness.step("b"), owner="worker-b")
    assert not await other.resume("no-such-saga")
    await asyncio.sleep(0.1)

    resumed = await other.resume(started.instance.saga_id)
    done = await other.wait(started.instance.saga_id, timeout=5.0)

    assert resumed
    assert done.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "a") == 2
    assert harness.journal.count("do", "b") == 1


async def test_shutdown_hands_unfinished_sagas_back_at_once(harness: Harness) -> None:
    """After a graceful shutdown another worker recovers the saga without waiting for the lease."""
    gated = Gated("a", harness.journal)
    leaving = harness.orchestrator(gated, harness.step("b"), lease_seconds=30.0)
    started = await leaving.start(SAGA, {"order_id": "o-1"})
    await asyncio.wait_for(gated.entered.wait(), 5.0)

    await leaving.shutdown(grace=0.05)
    gated.gate.set()
    other = harness.orchestrator(gated, harness.step("b"), owner="worker-b")
    taken = await other.recover()
    done = await other.wait(started.instance.saga_id, timeout=5.0)

    assert taken == 1
    assert done.status is SagaStatus.COMPLETED
    runs_of_a = harness.journal.of("do", "a")
    assert len(runs_of_a) == 2
    assert runs_of_a[0].idempotency_key == runs_of_a[1].idempotency_key


async def test_recovering_a_saga_this_orchestrator_still_drives_does_not_strand_it(
    harness: Harness,
) -> None:
    """If a driver's own lease ran out and it recovers that saga itself, the saga still finishes."""
    gated = Gated("a", harness.journal)
    orch = harness.orchestrator(gated, harness.step("b"), lease_seconds=0.05)
    started = await orch.start(SAGA, {"order_id": "o-1"})
    await asyncio.wait_for(gated.entered.wait(), 5.0)
    await asyncio.sleep(0.1)  # the lease runs out while the step is still working

    taken = await orch.recover()
    gated.gate.set()
    done = await orch.wait(started.instance.saga_id, timeout=1.0)

    assert taken == 1
    assert done.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "b") == 1


async def test_renewing_leases_leaves_a_saga_whose_driver_died_to_expire(
    harness: Harness,
) -> None:
    """A live orchestrator renews only what it drives, so another worker can take the rest."""
    gated = Gated("b", harness.journal)
    orch = harness.orchestrator(
        harness.step("a"), gated, lease_seconds=0.1, probe=crash_at("after_do", "a")
    )
    orphan = await orch.start(SAGA, {"order_id": "o-1"})
    with pytest.raises(Crash):
        await orch.drive(orphan.instance)
    busy = await orch.start(SAGA, {"order_id": "o-2"})
    await asyncio.wait_for(gated.entered.wait(), 5.0)
    await asyncio.sleep(0.15)  # both leases ran out; only the busy saga still has a driver

    await orch.renew_leases()
    other = harness.orchestrator(harness.step("a"), gated, owner="worker-b")
    await other.recover()
    gated.gate.set()

    taken = await harness.store.get(orphan.instance.saga_id)
    assert taken is not None
    assert taken.owner == "worker-b"
    assert (await other.wait(orphan.instance.saga_id, timeout=1.0)).status is SagaStatus.COMPLETED
    assert (await orch.wait(busy.instance.saga_id, timeout=1.0)).status is SagaStatus.COMPLETED
