"""The quickstart's crash: run with --die, the process is killed inside ``ship``; run again
without it, and the next process finishes the saga.

CI runs it: tests/acceptance/test_examples.py.
"""

import asyncio
import os
import signal
import sys

from sagakit import JSON, Saga, SagaOrchestrator, StepContext, step


@step("reserve")
async def reserve(ctx: StepContext) -> JSON:
    print("reserve", ctx.idempotency_key)
    return {"reserved": ctx.input["items"]}


@step("ship")
async def ship(ctx: StepContext) -> JSON:
    print("ship", ctx.idempotency_key, flush=True)
    if "--die" in sys.argv:
        os.kill(os.getpid(), signal.SIGKILL)  # the process dies mid-step
    return {"tracking": "T-1"}


async def main() -> None:
    parcel = Saga("parcel", [reserve, ship])
    async with SagaOrchestrator.connect(
        "sqlite:///./parcel.db", [parcel], lease_seconds=2
    ) as sagas:
        handle = await sagas.start("parcel", {"items": 2}, business_key="p1")
        print((await handle.result(timeout=30)).status)


asyncio.run(main())
