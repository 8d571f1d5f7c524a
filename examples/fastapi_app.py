"""Sagas in an existing FastAPI app (docs/how-to/fastapi.md; the acceptance tests run it).

Serve it with ``uvicorn examples.fastapi_app:app``; run as a script, it enters the app's
lifespan and sends four checkouts to it in-process (with httpx).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI

from sagakit import JSON, BusinessKeyConflict, Saga, StepContext, StepFailed, step
from sagakit.fastapi import Orchestrator, sagas_lifespan

DATABASE_URL = os.environ.get("SHOP_DATABASE_URL", "sqlite:///./shop.db")


@step("charge")
async def charge(ctx: StepContext) -> JSON:
    return {"charge_id": f"ch-{ctx.input['order_id']}", "amount": ctx.input["total"]}


@charge.compensation
async def refund(ctx: StepContext) -> None:
    print("refunded", ctx.result)


@step("ship")
async def ship(ctx: StepContext) -> JSON:
    if not ctx.input["address"]:
        raise StepFailed("Invalid shipping address")
    return {"tracking": f"tr-{ctx.input['order_id']}"}


ORDER = Saga("order", [charge, ship])


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # ... the app's own start-up ...
    async with sagas_lifespan(app, DATABASE_URL, [ORDER]):  # the one line that adds sagas
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/orders/{order_id}/checkout")
async def checkout(
    order_id: str, total: int, address: str, orchestrator: Orchestrator
) -> dict[str, str | None]:
    """Check the order out: one saga per order, however often this is called."""
    input: dict[str, JSON] = {"order_id": order_id, "total": total, "address": address}
    try:
        handle = await orchestrator.start("order", input, business_key=order_id)
    except BusinessKeyConflict as exc:  # the order was checked out with other details
        return {"status": "conflict", "error": exc.message}
    saga = await orchestrator.wait(handle.saga_id, timeout=10)
    return {"status": saga.status, "error": saga.error}


#: (order, address): a checkout, a refused one, the first again, and the first with a new address.
CHECKOUTS = [("o1", "Some Street"), ("o2", ""), ("o1", "Some Street"), ("o1", "Elm Row")]


async def main() -> None:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://shop") as client,
    ):
        for order_id, address in CHECKOUTS:
            params: dict[str, str | int] = {"total": 20, "address": address}
            answer = await client.post(f"/orders/{order_id}/checkout", params=params)
            print(order_id, answer.json())


if __name__ == "__main__":
    asyncio.run(main())
