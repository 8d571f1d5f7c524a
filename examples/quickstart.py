"""The README's saga (CI runs it: tests/acceptance/test_examples.py)."""

import asyncio

from sagakit import JSON, Saga, SagaOrchestrator, StepContext, StepFailed, step


@step("charge")
async def charge(ctx: StepContext) -> JSON:
    return {"charged": ctx.input["total"]}          # stored durably, passed on

@charge.compensation
async def refund(ctx: StepContext) -> None:
    print("refund", ctx.result)                      # runs if a later step fails

@step("ship")
async def ship(ctx: StepContext) -> JSON:
    raise StepFailed("Invalid shipping address")     # a business refusal

async def main() -> None:
    order = Saga("order", [charge, ship])
    async with SagaOrchestrator.connect("sqlite:///./demo.db", [order]) as sagas:
        handle = await sagas.start("order", {"total": 10}, business_key="o1")
        print((await handle.result(timeout=10)).status)   # compensated

asyncio.run(main())
