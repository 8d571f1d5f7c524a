"""The README's fifteen-line saga (CI runs it: tests/unit/test_examples.py)."""

import asyncio
from sagakit import Saga, SagaOrchestrator, Step, StepContext, StepFailed, open_store

class Charge(Step):
    name = "charge"
    async def do(self, ctx: StepContext) -> dict[str, int]:
        return {"charged": 10}                      # stored durably, passed on
    async def compensate(self, ctx: StepContext) -> None:
        print("refund", ctx.result)                  # runs if a later step fails

class Ship(Step):
    name = "ship"
    async def do(self, ctx: StepContext) -> None:
        raise StepFailed("Invalid shipping address")   # a business refusal

async def main() -> None:
    orchestrator = SagaOrchestrator(await open_store("sqlite:///./demo.db"), [Saga("order", [Charge(), Ship()])])
    started = await orchestrator.start("order", {"order_id": "o1"}, business_key="o1")
    print((await orchestrator.wait(started.instance.saga_id)).status)   # compensated
    await orchestrator.shutdown(); await orchestrator.store.close()

asyncio.run(main())
