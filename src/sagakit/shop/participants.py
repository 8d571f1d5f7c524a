"""The checkout saga: payment, inventory and shipping, each a step over the shop's store.

Each step's idempotency key is the saga's key for that step, so a replay after a crash
finds the inbox row written with the effect and changes nothing.
"""

from __future__ import annotations

import logging

from sagakit.errors import StepFailed
from sagakit.records import JSON, JSONObject
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
                "Refunding payment %s of %s to %s",
                ctx.idempotency_key,
                ctx.input["total"],
                ctx.input["user_id"],
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
            logger.info("Releasing stock reserved by %s", ctx.idempotency_key)


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
            logger.info("Cancelling shipment %s", ctx.idempotency_key)


def checkout_saga(shop: ShopStore) -> Saga:
    """The ``checkout`` saga: payment, then inventory, then shipping."""
    return Saga(CHECKOUT, [PaymentStep(shop), InventoryStep(shop), ShippingStep(shop)])
