"""The baseline: the original demo's checkout in memory, with nothing durable.

Same route and bodies as sagakit's ``POST /checkout/{order_id}``: three steps (payment,
inventory, shipping) over dicts, the steps already done compensated newest first when one
refuses. Orders are preloaded from :mod:`bench.workload`; ``BENCH_ORDERS`` says how many.

Run it as ``uvicorn --factory bench.baseline_app:create_app``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from bench import workload


class Refused(Exception):
    """A step's business refusal (the demo's ``StepFailed``)."""


@dataclass(slots=True)
class Shop:
    """The demo's state: balances, stock and orders, in dicts."""

    balances: dict[str, int] = field(default_factory=dict)
    stock: dict[str, int] = field(default_factory=dict)
    orders: dict[str, workload.BenchOrder] = field(default_factory=dict)

    @classmethod
    def preloaded(cls, count: int) -> Shop:
        """A shop holding the workload's users, items and first ``count`` orders."""
        return cls(
            balances=dict.fromkeys(workload.user_ids(), workload.BALANCE),
            stock=dict.fromkeys(workload.item_ids(), workload.STOCK),
            orders={o.order_id: o for o in workload.orders(count)},
        )

    async def pay(self, order: workload.BenchOrder) -> None:
        if self.balances[order.user_id] < order.total:
            raise Refused("Insufficient balance")
        self.balances[order.user_id] -= order.total

    async def refund(self, order: workload.BenchOrder) -> None:
        self.balances[order.user_id] += order.total

    async def reserve(self, order: workload.BenchOrder) -> None:
        if self.stock[order.item_id] < 1:
            raise Refused("Not enough stock")
        self.stock[order.item_id] -= 1

    async def release(self, order: workload.BenchOrder) -> None:
        self.stock[order.item_id] += 1

    async def ship(self, order: workload.BenchOrder) -> None:
        if not order.address.strip():
            raise Refused(workload.INVALID_ADDRESS)

    async def cancel_shipment(self, order: workload.BenchOrder) -> None:
        """Nothing was recorded, so nothing to cancel."""


Action = Callable[[workload.BenchOrder], Awaitable[None]]


def steps(shop: Shop) -> list[tuple[str, Action, Action]]:
    """The checkout saga: (name, do, compensate), in order."""
    return [
        ("payment", shop.pay, shop.refund),
        ("inventory", shop.reserve, shop.release),
        ("shipping", shop.ship, shop.cancel_shipment),
    ]


def create_app(order_count: int | None = None) -> FastAPI:
    """The baseline app, with ``order_count`` orders (default: ``BENCH_ORDERS``)."""
    count = int(os.environ.get("BENCH_ORDERS", "1000")) if order_count is None else order_count
    shop = Shop.preloaded(count)
    saga = steps(shop)
    app = FastAPI(title="sagakit bench baseline")

    @app.post("/checkout/{order_id}")
    async def checkout(order_id: str) -> JSONResponse:
        order = shop.orders.get(order_id)
        if order is None:
            return JSONResponse({"error": f"order {order_id!r} not found"}, status_code=404)
        ids = {"order_id": order_id, "saga_id": uuid.uuid4().hex}
        done: list[Action] = []
        for name, do, compensate in saga:
            try:
                await do(order)
            except Refused as exc:
                for undo in reversed(done):
                    await undo(order)
                body = {**ids, "status": "compensated", "error": str(exc), "failed_step": name}
                return JSONResponse(body, status_code=400)
            done.append(compensate)
        return JSONResponse({**ids, "status": "completed", "message": "Order Completed"})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
