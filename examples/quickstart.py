"""The README's fifteen-line saga (CI runs it: tests/acceptance/test_examples.py)."""

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
    saga = Saga("order", [charge, ship])
    orchestrator = await SagaOrchestrator.from_url("sqlite:///./demo.db", [saga])
    handle = await orchestrator.start("order", {"total": 10}, business_key="o1")
    print((await handle.result(timeout=10)).status)   # compensated
    await orchestrator.close()

asyncio.run(main())
