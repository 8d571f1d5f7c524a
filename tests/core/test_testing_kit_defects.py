"""The testing kit's crash points and ledger: waits are targetable, lists hold only reachable
points, and an undo check that accepts parallel members that never ran."""

from __future__ import annotations

import pytest

from sagakit import JSON, Parallel, Saga, SagaOrchestrator, SagaStatus, StepContext, WaitFor, step
from sagakit.testing import (
    CrashAt,
    CrashPoint,
    EffectLedger,
    FakeClock,
    MemoryStore,
    SimulatedCrash,
    crash_points,
    restart,
)


def ctx_of(step_name: str, saga_id: str = "s-1") -> StepContext:
    """A context as the orchestrator would give step ``step_name`` of saga ``saga_id``."""
    return StepContext(
        saga_id=saga_id,
        saga_name="order",
        step=step_name,
        input={},
        results={},
        idempotency_key=f"{saga_id}:{step_name}",
        attempt=1,
    )


def approval_saga(ledger: EffectLedger) -> Saga:
    """Charge, wait for the ``approved`` signal, ship."""

    @step("charge")
    async def charge(ctx: StepContext) -> JSON:
        if not ledger.seen(ctx):
            ledger.record(ctx)
        return None

    @charge.compensation
    async def refund(ctx: StepContext) -> None:
        if ledger.is_applied(ctx):
            ledger.record_undo(ctx)

    @step("ship")
    async def ship(ctx: StepContext) -> JSON:
        return None

    return Saga(
        "approved-order", [charge, WaitFor("approval", signal="approved", deadline=None), ship]
    )


def test_crash_points_of_a_wait_are_its_wait_and_signal_points_not_do() -> None:
    """A WaitFor has no action: its points are before/after_wait and its signal's."""
    points = {str(p) for p in crash_points(approval_saga(EffectLedger()))}

    assert "before_do:approval" not in points
    assert "after_do:approval" not in points
    assert {"before_wait:approval", "after_wait:approval", "after_signal:approved"} <= points
    assert {"before_do:charge", "after_do:charge", "before_do:ship", "after_do:ship"} <= points


async def test_a_crash_after_waiting_and_after_a_signal_can_be_targeted() -> None:
    """``after_wait`` and ``after_signal`` are crash points a test can name and survive."""
    ledger = EffectLedger()
    crash = CrashAt("after_wait:approval", CrashPoint.parse("after_signal:approved"))
    orchestrator = SagaOrchestrator(
        MemoryStore(), [approval_saga(ledger)], sleep=FakeClock().sleep, probe=crash
    )
    successor = None
    try:
        handle = await orchestrator.start("approved-order", {})
        with pytest.raises(SimulatedCrash):  # its driver killed once the saga was parked
            await orchestrator.wait(handle.saga_id, timeout=5)
        successor = await restart(orchestrator)
        with pytest.raises(SimulatedCrash):
            await successor.signal(handle.saga_id, "approved", {"by": "ops"})
        successor = await restart(successor)
        done = await successor.wait(handle.saga_id, timeout=5)
    finally:
        await (successor or orchestrator).shutdown()
    assert [str(p) for p in crash.fired] == ["after_wait:approval", "after_signal:approved"]
    assert done.status is SagaStatus.COMPLETED
    ledger.assert_applied_once("charge")


def test_undone_once_accepts_a_parallel_member_that_never_ran() -> None:
    """A member that applied nothing has nothing to undo: ``assert_undone_once`` passes it."""
    ledger = EffectLedger()
    reserve = ctx_of("reserve")
    ledger.record(reserve)
    ledger.record_undo(reserve)

    ledger.assert_undone_once("reserve", "notify")  # notify's compensation was a no-op


def test_undone_once_still_refuses_an_undo_of_an_effect_never_applied() -> None:
    """An undo recorded for a key that applied nothing fails ``assert_undone_once``."""
    ledger = EffectLedger()
    ledger.record_undo(ctx_of("notify"))

    with pytest.raises(AssertionError, match="'notify' was undone 1 times but applied 0"):
        ledger.assert_undone_once("notify")


async def test_undone_once_holds_for_a_compensated_parallel_group() -> None:
    """Parallel members refused or never applied, then compensated: the check passes."""
    ledger = EffectLedger()

    @step("reserve")
    async def reserve(ctx: StepContext) -> JSON:
        ledger.record(ctx)
        return None

    @reserve.compensation
    async def release(ctx: StepContext) -> None:
        if ledger.is_applied(ctx):
            ledger.record_undo(ctx)

    @step("notify")
    async def notify(ctx: StepContext) -> JSON:
        raise RuntimeError("mail server down")  # never applies; retries run out

    saga = Saga("notified", [Parallel(reserve, notify)])
    orchestrator = SagaOrchestrator(MemoryStore(), [saga], sleep=FakeClock().sleep)
    try:
        handle = await orchestrator.start("notified", {})
        done = await handle.result(timeout=5)
    finally:
        await orchestrator.shutdown()
    assert done.status is SagaStatus.COMPENSATED
    ledger.assert_undone_once("reserve", "notify")
