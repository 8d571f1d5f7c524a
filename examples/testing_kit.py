"""A saga tested with sagakit.testing (docs/how-to/testing.md; the acceptance tests run it).

The process is killed at every crash point of the saga, once with an order that ships and
once with one that shipping refuses; each time a new process recovers the saga, and the
ledger shows that every effect happened once, and every undo once.
"""

from __future__ import annotations

import asyncio
import logging

from sagakit import (
    JSON,
    JSONObject,
    Saga,
    SagaOrchestrator,
    SagaStatus,
    StepContext,
    StepFailed,
    step,
)
from sagakit.testing import (
    CrashAt,
    CrashPoint,
    EffectLedger,
    FakeClock,
    MemoryStore,
    crash_points,
    wait_through_crashes,
)


class Payments:
    """A fake payment service that deduplicates by idempotency key, as the real one must."""

    def __init__(self, ledger: EffectLedger) -> None:
        self.ledger = ledger
        self.charges: dict[str, int] = {}  # its inbox: one row per key

    async def charge(self, key: str, amount: int, ctx: StepContext) -> None:
        if key not in self.charges:
            self.charges[key] = amount
            self.ledger.record(ctx, amount)

    async def refund(self, key: str, ctx: StepContext) -> None:
        if self.charges.get(key, 0) > 0:
            self.charges[key] = 0  # kept as a tombstone: a late charge with this key is ignored
            self.ledger.record_undo(ctx)


def order_saga(payments: Payments, ledger: EffectLedger) -> Saga:
    """Charge the order, then ship it (shipping refuses an empty address)."""

    @step("charge")
    async def charge(ctx: StepContext) -> JSON:
        amount = ctx.input["total"]
        assert isinstance(amount, int)
        await payments.charge(ctx.idempotency_key, amount, ctx)
        return {"charged": amount}

    @charge.compensation
    async def refund(ctx: StepContext) -> None:
        await payments.refund(ctx.idempotency_key, ctx)

    @step("ship")
    async def ship(ctx: StepContext) -> JSON:
        if not ctx.input["address"]:
            raise StepFailed("Invalid shipping address")
        if not ledger.seen(ctx):
            ledger.record(ctx)
        return None

    return Saga("order", [charge, ship])


async def survives(point: CrashPoint, input: JSONObject) -> tuple[bool, SagaStatus]:
    """Crash at ``point``, recover, check the effects; whether the crash came, and the outcome."""
    ledger = EffectLedger()
    crash = CrashAt(point)
    orchestrator = SagaOrchestrator(
        MemoryStore(),
        [order_saga(Payments(ledger), ledger)],
        sleep=FakeClock().sleep,  # retry backoffs cost no time
        probe=crash,
    )
    handle = await orchestrator.start("order", input, business_key="o1")
    saga = await wait_through_crashes(orchestrator, handle.saga_id)
    await orchestrator.shutdown()
    if saga.status is SagaStatus.COMPLETED:
        ledger.assert_applied_once("charge", "ship")
        ledger.assert_not_undone("charge")
    else:
        ledger.assert_undone_once("charge")
        ledger.assert_untouched("ship")
    ledger.assert_no_duplicates()
    return bool(crash.fired), saga.status


ORDERS: list[JSONObject] = [{"total": 20, "address": "Some Street"}, {"total": 20, "address": ""}]


async def main() -> None:
    # The crashes are on purpose: keep the engine's "driver crashed" lines off the terminal.
    logging.getLogger("sagakit").setLevel(logging.CRITICAL)
    points = crash_points(order_saga(Payments(EffectLedger()), EffectLedger()))
    for input in ORDERS:
        for point in points:
            fired, status = await survives(point, input)
            print(f"{point}: {'crashed' if fired else 'not reached'}, then {status}")
    print(f"{len(points)} crash points, twice: every effect once, every undo once")


if __name__ == "__main__":
    asyncio.run(main())
