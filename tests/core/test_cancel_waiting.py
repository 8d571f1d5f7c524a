"""Cancelling a saga parked on a ``WaitFor``: it compensates at once, with no signal."""

from __future__ import annotations

from sagakit import JSON, Saga, SagaOrchestrator, SagaStatus, StepContext, StepStatus, WaitFor, step


@step("hold")
async def hold(ctx: StepContext) -> JSON:
    """Hold a seat (nothing to undo in this test)."""
    return None


PARKED = Saga("parked", [hold, WaitFor("approval", signal="approved", deadline=None)])


async def test_cancelling_a_waiting_saga_compensates_it_without_a_signal(store_url: str) -> None:
    """An operator's cancel wakes the parked saga; a worker compensates it."""
    async with SagaOrchestrator.connect(store_url, [PARKED], poll_seconds=0.05) as orchestrator:
        handle = await orchestrator.start("parked", {})
        parked = await orchestrator.wait(handle.saga_id, timeout=0.5)
        assert parked.steps[1].status is StepStatus.WAITING

        await orchestrator.cancel(handle.saga_id, actor="test")
        done = await orchestrator.wait(handle.saga_id, timeout=5)

    assert done.status is SagaStatus.COMPENSATED
    assert done.error == "cancelled by an operator"
