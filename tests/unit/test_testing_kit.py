"""sagakit.testing on a saga of its own: virtual time, a crash at every point, effects once."""

from __future__ import annotations

import time

import pytest

from sagakit.errors import StepFailed
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, JSONObject, SagaStatus
from sagakit.retry import RetryPolicy
from sagakit.saga import Saga, StepContext, WaitFor, step
from sagakit.testing import (
    POINTS,
    CrashAt,
    CrashPoint,
    EffectLedger,
    FakeClock,
    MemoryStore,
    SimulatedCrash,
    crash_points,
    wait_through_crashes,
)

STEPS = ("charge", "reserve", "ship")


def order_saga(ledger: EffectLedger, *, idempotent: bool = True) -> Saga:
    """Charge, reserve, ship: fake participants that record into ``ledger``.

    Shipping refuses an empty address. With ``idempotent`` false, the charge forgets to
    check its key, as a buggy participant would.
    """

    @step("charge")
    async def charge(ctx: StepContext) -> JSON:
        if not (idempotent and ledger.seen(ctx)):
            ledger.record(ctx, ctx.input["total"])
        return {"charge_id": ctx.idempotency_key}

    @charge.compensation
    async def refund(ctx: StepContext) -> None:
        if ledger.is_applied(ctx):
            ledger.record_undo(ctx)

    @step("reserve")
    async def reserve(ctx: StepContext) -> JSON:
        if not ledger.seen(ctx):
            ledger.record(ctx)
        return None

    @reserve.compensation
    async def release(ctx: StepContext) -> None:
        if ledger.is_applied(ctx):
            ledger.record_undo(ctx)

    @step("ship")
    async def ship(ctx: StepContext) -> JSON:
        if not ctx.input["address"]:
            raise StepFailed("Invalid shipping address")
        if not ledger.seen(ctx):
            ledger.record(ctx)
        return None

    return Saga("order", [charge, reserve, ship])


GOOD: JSONObject = {"total": 20, "address": "Some Street"}
REFUSED: JSONObject = {"total": 20, "address": ""}
EVERY_POINT = crash_points(order_saga(EffectLedger()))
#: The points a run that ship refuses never reaches: ship applies nothing, so it is not undone.
UNREACHED_WHEN_REFUSED = {CrashPoint(p, "ship") for p in POINTS[1:]}


async def run_with_crash(crash: CrashAt, input: JSONObject) -> tuple[SagaStatus, EffectLedger]:
    """Run the order saga on a memory store with ``crash`` as its probe, through restarts."""
    ledger = EffectLedger()
    orchestrator = SagaOrchestrator(
        MemoryStore(), [order_saga(ledger)], sleep=FakeClock().sleep, probe=crash
    )
    try:
        handle = await orchestrator.start("order", input, business_key="o-1")
        ended = await wait_through_crashes(orchestrator, handle.saga_id, timeout=10)
    finally:
        await orchestrator.shutdown(grace=1.0)
    return ended.status, ledger


# -- a crash at every point -----------------------------------------------------------------


@pytest.mark.parametrize("point", EVERY_POINT, ids=str)
async def test_completed_saga_survives_a_crash_at_any_point_with_each_effect_once(
    point: CrashPoint,
) -> None:
    """Wherever the process dies, the restarted one completes the saga; no effect doubles."""
    crash = CrashAt(point)
    status, ledger = await run_with_crash(crash, GOOD)

    assert status is SagaStatus.COMPLETED
    assert crash.fired == ([point] if point.point in POINTS[:2] else [])
    ledger.assert_applied_once(*STEPS)
    ledger.assert_not_undone(*STEPS)
    ledger.assert_no_duplicates()


@pytest.mark.parametrize("point", EVERY_POINT, ids=str)
async def test_refused_saga_survives_a_crash_at_any_point_with_each_effect_undone_once(
    point: CrashPoint,
) -> None:
    """Wherever the process dies, the refused saga ends compensated with each effect undone once."""
    crash = CrashAt(point)
    status, ledger = await run_with_crash(crash, REFUSED)

    assert status is SagaStatus.COMPENSATED
    assert crash.fired == ([] if point in UNREACHED_WHEN_REFUSED else [point])
    ledger.assert_undone_once("charge", "reserve")
    ledger.assert_untouched("ship")
    ledger.assert_no_duplicates()


async def test_two_crashes_in_one_run_are_both_survived() -> None:
    """A probe with two points kills the first process and the one that replaced it."""
    crash = CrashAt("after_do:charge", "before_compensate:reserve")
    status, ledger = await run_with_crash(crash, REFUSED)

    assert status is SagaStatus.COMPENSATED
    assert [str(p) for p in crash.fired] == ["after_do:charge", "before_compensate:reserve"]
    ledger.assert_undone_once("charge", "reserve")


async def test_participant_that_ignores_its_key_is_caught_applying_twice() -> None:
    """A crash after a charge that does not deduplicate shows up as two charges in the ledger."""
    ledger = EffectLedger()
    orchestrator = SagaOrchestrator(
        MemoryStore(),
        [order_saga(ledger, idempotent=False)],
        sleep=FakeClock().sleep,
        probe=CrashAt("after_do:charge"),
    )
    handle = await orchestrator.start("order", GOOD)
    await wait_through_crashes(orchestrator, handle.saga_id)

    with pytest.raises(AssertionError, match="'charge' applied 2 times"):
        ledger.assert_no_duplicates()
    with pytest.raises(AssertionError, match="'charge' applied 2 times"):
        ledger.assert_applied_once("charge")


async def test_probe_that_crashes_every_run_exhausts_the_restarts() -> None:
    """A saga that never gets past its crashes ends the wait with an ``AssertionError``."""

    def always(point: str, step: str) -> None:
        raise SimulatedCrash(f"{point}:{step}")

    orchestrator = SagaOrchestrator(MemoryStore(), [order_saga(EffectLedger())], probe=always)
    handle = await orchestrator.start("order", GOOD)

    with pytest.raises(AssertionError, match="unfinished after 3 restarts"):
        await wait_through_crashes(orchestrator, handle.saga_id, restarts=3)


def test_simulated_crash_is_not_an_exception_step_code_could_catch() -> None:
    """The crash derives from ``BaseException``, so ``except Exception`` in a step lets it by."""
    assert issubclass(SimulatedCrash, BaseException)
    assert not issubclass(SimulatedCrash, Exception)


# -- crash points -----------------------------------------------------------------------------


def test_crash_points_list_forward_points_in_order_then_compensations_newest_first() -> None:
    """Every step's two forward points in step order, then its compensation points in reverse."""
    points = [str(p) for p in crash_points(order_saga(EffectLedger()))]

    assert points == [
        "before_do:charge",
        "after_do:charge",
        "before_do:reserve",
        "after_do:reserve",
        "before_do:ship",
        "after_do:ship",
        "before_compensate:ship",
        "after_compensate:ship",
        "before_compensate:reserve",
        "after_compensate:reserve",
        "before_compensate:charge",
        "after_compensate:charge",
    ]


def test_crash_point_with_an_unknown_point_or_no_step_is_refused() -> None:
    """A misspelt point, or a spec without its step, raises instead of never firing."""
    with pytest.raises(ValueError, match="unknown point"):
        CrashPoint.parse("after_doo:charge")
    with pytest.raises(ValueError, match="point:step"):
        CrashAt("after_do")


def test_crash_at_fires_once_per_point() -> None:
    """The probe raises at its point the first time only, and records that it fired."""
    crash = CrashAt("after_do:charge")
    crash("before_do", "charge")
    with pytest.raises(SimulatedCrash, match="after_do:charge"):
        crash("after_do", "charge")
    crash("after_do", "charge")

    assert crash.fired == [CrashPoint("after_do", "charge")]


# -- the fake clock ---------------------------------------------------------------------------


async def test_fake_clock_skips_retry_backoff_but_records_it() -> None:
    """Minutes of backoff cost no real time; the clock moves on by the delays asked for."""
    failures = [RuntimeError("flaky"), RuntimeError("flaky")]

    @step("flaky", retry=RetryPolicy(max_attempts=3, initial_delay=60.0, max_delay=600.0))
    async def flaky(ctx: StepContext) -> JSON:
        if failures:
            raise failures.pop()
        return "done"

    clock = FakeClock()
    orchestrator = SagaOrchestrator(MemoryStore(), [Saga("flaky", [flaky])], sleep=clock.sleep)
    began = time.monotonic()
    try:
        handle = await orchestrator.start("flaky", {})
        ended = await handle.result(timeout=5)
    finally:
        await orchestrator.shutdown()

    assert ended.status is SagaStatus.COMPLETED
    assert time.monotonic() - began < 2.0
    assert len(clock.slept) == 2
    assert min(clock.slept) >= 30.0  # 60 s and 120 s, give or take the jitter
    assert clock.now == pytest.approx(sum(clock.slept))


# -- the ledger -------------------------------------------------------------------------------


def ctx_of(step_name: str, saga_id: str = "s-1") -> StepContext:
    """A context of ``step_name`` in saga ``saga_id``."""
    return StepContext(
        saga_id=saga_id,
        saga_name="order",
        step=step_name,
        input={},
        results={},
        idempotency_key=f"{saga_id}:{step_name}",
        attempt=1,
    )


def test_ledger_accepts_one_effect_and_one_undo_per_key() -> None:
    """Each of two sagas charging and refunding once passes every assertion."""
    ledger = EffectLedger()
    for saga_id in ("s-1", "s-2"):
        ledger.record(ctx_of("charge", saga_id), 20)
        ledger.record_undo(ctx_of("charge", saga_id))

    ledger.assert_undone_once("charge")
    ledger.assert_untouched("ship")
    ledger.assert_no_duplicates()
    assert [e.detail for e in ledger.effects("charge")] == [20, 20]


def test_ledger_refuses_a_step_that_applied_nothing() -> None:
    """``assert_applied_once`` fails for a step with no effect at all."""
    with pytest.raises(AssertionError, match="'charge' applied nothing"):
        EffectLedger().assert_applied_once("charge")


def test_ledger_refuses_a_double_undo_and_an_undo_left_out() -> None:
    """Undone twice, or not at all, fails ``assert_undone_once``; any undo fails not_undone."""
    twice, never = EffectLedger(), EffectLedger()
    twice.record(ctx_of("charge"))
    twice.record_undo(ctx_of("charge"))
    twice.record_undo(ctx_of("charge"))
    never.record(ctx_of("charge"))

    with pytest.raises(AssertionError, match="undone 2 times"):
        twice.assert_undone_once("charge")
    with pytest.raises(AssertionError, match="undone 0 times"):
        never.assert_undone_once("charge")
    with pytest.raises(AssertionError, match="was undone under key 's-1:charge'"):
        twice.assert_not_undone("charge")


def test_ledger_refuses_an_effect_applied_after_its_undo() -> None:
    """A late action after its compensation (a zombie) fails ``assert_no_duplicates``."""
    ledger = EffectLedger()
    ledger.record_undo(ctx_of("charge"))
    ledger.record(ctx_of("charge"))

    assert ledger.seen(ctx_of("charge"))
    with pytest.raises(AssertionError, match="after its undo"):
        ledger.assert_no_duplicates()


def test_ledger_tells_an_applied_effect_from_an_undone_one() -> None:
    """``is_applied`` is true between the effect and its undo only; ``seen`` stays true."""
    ledger = EffectLedger()
    ctx = ctx_of("charge")
    assert not ledger.is_applied(ctx)
    ledger.record(ctx)
    assert ledger.is_applied(ctx)
    ledger.record_undo(ctx)

    assert not ledger.is_applied(ctx)
    assert ledger.seen(ctx)


async def test_fake_clock_lets_a_signal_deadline_pass_without_waiting() -> None:
    """With the fake clock in the orchestrator and the store, an hour's deadline passes at once."""
    clock = FakeClock()
    store = MemoryStore(clock=clock.time)
    refunded: list[str] = []

    @step("charge")
    async def charge(ctx: StepContext) -> JSON:
        return "charged"

    @charge.compensation
    async def refund(ctx: StepContext) -> None:
        refunded.append(ctx.idempotency_key)

    saga = Saga("approval", [charge, WaitFor("approved", deadline=3600)])
    orchestrator = SagaOrchestrator(store, [saga], sleep=clock.sleep, clock=clock.time)
    handle = await orchestrator.start("approval", {})
    parked = await orchestrator.wait(handle.saga_id, timeout=5.0)
    assert parked.status is SagaStatus.RUNNING
    assert await orchestrator.recover() == 0  # the deadline has not passed

    clock.advance(3601)
    assert await orchestrator.recover() == 1
    done = await orchestrator.wait(handle.saga_id, timeout=5.0)

    assert done.status is SagaStatus.COMPENSATED
    assert done.failed_step == "approved"
    assert refunded == [f"{handle.saga_id}:charge"]
    await orchestrator.shutdown()
