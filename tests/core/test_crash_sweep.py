"""``crash_sweep``: every reachable point crashed and recovered, and the broken one named."""

from __future__ import annotations

import pytest

from sagakit import (
    JSON,
    JSONObject,
    Parallel,
    Saga,
    SagaStatus,
    Sleep,
    Step,
    StepContext,
    StepFailed,
    WaitFor,
    open_store,
    step,
)
from sagakit.store import SagaStore
from sagakit.testing import EffectLedger, crash_sweep

GOOD: JSONObject = {"total": 20, "address": "Some Street"}
REFUSED: JSONObject = {"total": 20, "address": ""}


def charge_step(ledger: EffectLedger, *, idempotent_charge: bool, idempotent_refund: bool) -> Step:
    """The charge; ``idempotent_*`` false: it forgets to check the key, as a buggy one would."""

    @step("charge")
    async def charge(ctx: StepContext) -> JSON:
        if not (idempotent_charge and ledger.seen(ctx)):
            ledger.record(ctx, ctx.input["total"])
        return {"charge_id": ctx.idempotency_key}

    @charge.compensation
    async def refund(ctx: StepContext) -> None:
        if not idempotent_refund or ledger.is_applied(ctx):
            ledger.record_undo(ctx)

    return charge


def order_saga(
    ledger: EffectLedger, *, idempotent_charge: bool = True, idempotent_refund: bool = True
) -> Saga:
    """Charge, then a parallel reserve and notify, a wait for approval, then ship.

    Ship refuses an empty address.
    """
    charge = charge_step(
        ledger, idempotent_charge=idempotent_charge, idempotent_refund=idempotent_refund
    )

    @step("reserve")
    async def reserve(ctx: StepContext) -> JSON:
        if not ledger.seen(ctx):
            ledger.record(ctx)
        return None

    @reserve.compensation
    async def release(ctx: StepContext) -> None:
        if ledger.is_applied(ctx):
            ledger.record_undo(ctx)

    @step("notify")
    async def notify(ctx: StepContext) -> JSON:
        return None  # applies nothing the ledger tracks

    @step("ship")
    async def ship(ctx: StepContext) -> JSON:
        if not ctx.input["address"]:
            raise StepFailed("Invalid shipping address")
        if not ledger.seen(ctx):
            ledger.record(ctx)
        return None

    approval = WaitFor("approval", signal="approved", deadline=None)
    return Saga("order", [charge, Parallel(reserve, notify), approval, ship])


SIGNALS: dict[str, JSON] = {"approved": {"by": "ops"}}


async def test_crash_sweep_names_the_point_where_a_step_applied_twice() -> None:
    """A charge that ignores its key: the sweep fails at ``after_do:charge``, saying why."""
    ledger = EffectLedger()
    saga = order_saga(ledger, idempotent_charge=False)

    with pytest.raises(AssertionError) as failed:
        await crash_sweep(saga, GOOD, ledger=ledger, signals=SIGNALS)

    message = str(failed.value)
    assert message.startswith("crash_sweep of 'order': 1 of ")
    assert "\n  after_do:charge: 'charge' applied 2 times under key " in message
    assert "before_do:charge:" not in message  # a crash before the charge harms nothing


async def test_crash_sweep_names_the_point_where_an_undo_ran_twice() -> None:
    """A refund that ignores its key: the sweep fails at ``after_compensate:charge``."""
    ledger = EffectLedger()
    saga = order_saga(ledger, idempotent_refund=False)

    with pytest.raises(AssertionError) as failed:
        await crash_sweep(saga, REFUSED, ledger=ledger, signals=SIGNALS)

    assert "\n  after_compensate:charge: 'charge' undone 2x, applied 1x" in str(failed.value)


@pytest.mark.parametrize(("input", "status"), [(GOOD, "completed"), (REFUSED, "compensated")])
async def test_crash_sweep_passes_an_idempotent_saga_on_every_store(
    store_url: str, input: JSONObject, status: str
) -> None:
    """Each point reached, parallel members and the wait included, is crashed and survived."""
    ledger = EffectLedger()

    async def fresh_store() -> SagaStore:
        return await open_store(store_url)

    report = await crash_sweep(
        order_saga(ledger), input, ledger=ledger, signals=SIGNALS, store=fresh_store
    )

    assert report.status == status
    assert report.failures == []
    assert report.unreached == []
    forward = {"before_do:charge", "after_do:charge", "before_do:reserve", "after_do:reserve"}
    forward |= {"before_do:notify", "after_do:notify", "before_do:ship"}
    forward |= {"before_wait:approval", "after_wait:approval", "after_signal:approved"}
    assert forward <= set(report.points)
    if status == "compensated":
        backward = {
            f"{p}_compensate:{s}" for p in ("before", "after") for s in ("charge", "reserve")
        }
        assert backward | {"before_compensate:notify", "before_compensate:approval"} <= set(
            report.points
        )
    else:
        assert "after_do:ship" in report.points


async def test_crash_sweep_says_when_the_saga_cannot_end_without_a_signal() -> None:
    """A wait with no deadline and no signal given: a clear failure, not a hang."""
    ledger = EffectLedger()

    with pytest.raises(AssertionError, match=r"the run without a crash did not end within 0\.5s"):
        await crash_sweep(order_saga(ledger), GOOD, ledger=ledger, timeout=0.5)


async def test_crash_sweep_runs_a_check_of_yours_after_every_run() -> None:
    """``check`` sees each ended saga; its AssertionError fails the sweep, naming the point."""
    seen: list[SagaStatus] = []

    async def check(ended: object) -> None:
        from sagakit import SagaInstance

        assert isinstance(ended, SagaInstance)
        seen.append(ended.status)
        assert len(seen) < 3, "third run refused"

    ledger = EffectLedger()
    with pytest.raises(AssertionError, match=r"\n  after_do:charge: third run refused"):
        await crash_sweep(order_saga(ledger), GOOD, ledger=ledger, signals=SIGNALS, check=check)
    assert seen[0] is SagaStatus.COMPLETED


async def test_crash_sweep_crashes_a_sleeping_saga_too() -> None:
    """A ``Sleep``: crashed before and after it parks, the saga still wakes and completes."""
    ledger = EffectLedger()
    saga = Saga("napper", [charge_step(ledger, idempotent_charge=True, idempotent_refund=True)])
    saga = Saga("napper", [*saga.steps, Sleep("nap", 0.1)])

    report = await crash_sweep(saga, GOOD, ledger=ledger)

    assert report.status == "completed"
    assert {"before_wait:nap", "after_wait:nap"} <= set(report.points)
    assert not any(p.startswith("after_signal") for p in report.points)
