"""Operator actions on the engine: cancel a running saga, resolve a failed one by hand."""

from __future__ import annotations

import asyncio

import pytest

from sagakit.errors import InvalidTransition, SagaNotFound, StepFailed
from sagakit.records import SagaStatus, StepStatus
from sagakit.retry import RetryPolicy
from tests.engine.test_orchestrator import SAGA, Gated, Harness, harness, statuses

__all__ = ["harness"]  # the fixture, imported so that pytest finds it here


async def test_cancel_of_a_running_saga_compensates_what_it_did(harness: Harness) -> None:
    """A cancelled saga stops before its next step and compensates the steps already done."""
    gated = Gated("b", harness.journal)
    orch = harness.orchestrator(harness.step("a"), gated, harness.step("c"))
    started = await orch.start(SAGA, {"order_id": "o-1"})
    await asyncio.wait_for(gated.entered.wait(), 5.0)

    flagged = await orch.cancel(started.instance.saga_id, actor="alice")
    gated.gate.set()
    done = await orch.wait(started.instance.saga_id, timeout=5.0)

    assert flagged.cancel_requested
    assert done.status is SagaStatus.COMPENSATED
    assert done.error == "cancelled by an operator"
    assert harness.journal.count("do", "c") == 0
    assert harness.journal.compensated() == ["c", "b", "a"]
    assert statuses(done) == [StepStatus.COMPENSATED] * 3
    types = [e.type for e in await harness.store.events(done.saga_id)]
    assert "operator_cancel" in types
    assert types.index("operator_cancel") < types.index("saga_cancelled")


async def test_cancel_of_an_abandoned_saga_is_carried_out_by_recovery(harness: Harness) -> None:
    """A saga whose driver is gone when it is cancelled compensates once recovered."""
    gated = Gated("b", harness.journal)
    first = harness.orchestrator(harness.step("a"), gated, lease_seconds=0.05)
    started = await first.start(SAGA, {"order_id": "o-1"})
    await asyncio.wait_for(gated.entered.wait(), 5.0)
    task = first.drive(started.instance)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await first.cancel(started.instance.saga_id)
    await asyncio.sleep(0.1)

    second = harness.orchestrator(harness.step("a"), harness.step("b"), owner="worker-b")
    assert await second.recover() == 1
    done = await second.wait(started.instance.saga_id, timeout=5.0)

    assert done.status is SagaStatus.COMPENSATED
    assert harness.journal.count("do", "b") == 1  # only the abandoned attempt
    assert "a" in harness.journal.compensated()


async def test_cancel_of_a_saga_that_is_not_running_raises_invalid_transition(
    harness: Harness,
) -> None:
    """Only a running saga can be cancelled; a finished one is refused and unchanged."""
    orch = harness.orchestrator(harness.step("a"))
    started = await orch.start(SAGA, {})
    done = await orch.wait(started.instance.saga_id, timeout=5.0)

    with pytest.raises(InvalidTransition):
        await orch.cancel(done.saga_id)
    with pytest.raises(SagaNotFound):
        await orch.cancel("no-such-saga")
    after = await harness.store.get(done.saga_id)
    assert after is not None
    assert after.status is SagaStatus.COMPLETED
    assert not after.cancel_requested


async def test_resolve_marks_a_failed_saga_compensated_with_the_reason(harness: Harness) -> None:
    """An operator resolving a failed saga by hand makes it compensated and records why."""
    never = RetryPolicy(max_attempts=1, initial_delay=0)
    a = harness.step("a", compensation_fails=[RuntimeError("refund service down")])
    a.compensation_retry = never
    b = harness.step("b", fails=[StepFailed("no stock")])
    orch = harness.orchestrator(a, b)
    started = await orch.start(SAGA, {})
    failed = await orch.wait(started.instance.saga_id, timeout=5.0)
    assert failed.status is SagaStatus.FAILED

    resolved = await orch.resolve(failed.saga_id, actor="bob", reason="refunded by hand")

    assert resolved.status is SagaStatus.COMPENSATED
    stored = await harness.store.get(failed.saga_id)
    assert stored is not None
    assert stored.status is SagaStatus.COMPENSATED
    events = await harness.store.events(failed.saga_id)
    assert events[-1].type == "operator_resolved"
    assert events[-1].detail == "resolved by bob: refunded by hand"
    with pytest.raises(InvalidTransition):
        await orch.resolve(failed.saga_id, reason="twice")
    with pytest.raises(SagaNotFound):
        await orch.resolve("no-such-saga", reason="x")
