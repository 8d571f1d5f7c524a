"""The checkout saga: payment, inventory and shipping, each a step over the shop's store.

Each step's idempotency key is the saga's key for that step, so a replay after a crash
finds the inbox row written with the effect and changes nothing.
"""

from __future__ import annotations

import logging

from sagakit.errors import StepFailed
from sagakit.records import JSON, JSONObject
from sagakit.retry import RetryPolicy
from sagakit.saga import Saga, Step, StepContext
from sagakit.shop.base import ShopStore

logger = logging.getLogger("sagakit.shop")

CHECKOUT = "checkout"


def _lines(order: JSONObject) -> dict[str, int]:
    items = order["items"]
    assert isinstance(items, dict)
    return {str(k): int(v) for k, v in items.items()}  # type: ignore[arg-type]


class PaymentStep(Step):
    """Debit the order's total from the buyer's balance; refund it on compensation."""

    name = "payment"

    def __init__(self, shop: ShopStore) -> None:
        self.shop = shop

    async def do(self, ctx: StepContext) -> JSON:
        user_id, total = str(ctx.input["user_id"]), int(ctx.input["total"])  # type: ignore[arg-type]
        rejection = await self.shop.charge(ctx.idempotency_key, user_id, total)
        if rejection:
            raise StepFailed(rejection)
        return {"payment_id": ctx.idempotency_key, "amount": total}

    async def compensate(self, ctx: StepContext) -> None:
        if await self.shop.refund(ctx.idempotency_key):
            logger.info(
                "payment_refunded",
                extra={
                    "payment_id": ctx.idempotency_key,
                    "amount": ctx.input["total"],
                    "user_id": ctx.input["user_id"],
                },
            )


class InventoryStep(Step):
    """Reserve every line of the order, all or nothing; put the stock back on compensation."""

    name = "inventory"

    def __init__(self, shop: ShopStore) -> None:
        self.shop = shop

    async def do(self, ctx: StepContext) -> JSON:
        lines = _lines(ctx.input)
        rejection = await self.shop.reserve(ctx.idempotency_key, str(ctx.input["order_id"]), lines)
        if rejection:
            raise StepFailed(rejection)
        return {"reservation_id": ctx.idempotency_key}

    async def compensate(self, ctx: StepContext) -> None:
        if await self.shop.release(ctx.idempotency_key):
            logger.info(
                "stock_released",
                extra={"reservation_id": ctx.idempotency_key, "items": ctx.input["items"]},
            )


class ShippingStep(Step):
    """Record a shipment to the order's address; cancel it on compensation."""

    name = "shipping"

    def __init__(self, shop: ShopStore) -> None:
        self.shop = shop

    async def do(self, ctx: StepContext) -> JSON:
        address = str(ctx.input["address"])
        rejection = await self.shop.ship(ctx.idempotency_key, str(ctx.input["order_id"]), address)
        if rejection:
            raise StepFailed(rejection)
        return {"shipment_id": ctx.idempotency_key}

    async def compensate(self, ctx: StepContext) -> None:
        if await self.shop.cancel_shipment(ctx.idempotency_key):
            logger.info("shipment_cancelled", extra={"shipment_id": ctx.idempotency_key})


def checkout_saga(shop: ShopStore, *, compensation_retry: RetryPolicy | None = None) -> Saga:
    """The ``checkout`` saga: payment, then inventory, then shipping.

    ``compensation_retry`` replaces the steps' default compensation policy (an operator who
    wants a stuck compensation in front of them sooner than in half an hour).
    """
    steps: list[Step] = [PaymentStep(shop), InventoryStep(shop), ShippingStep(shop)]
    if compensation_retry is not None:
        for step in steps:
            step.compensation_retry = compensation_retry
    return Saga(CHECKOUT, steps)
