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


def _payer(ctx: StepContext) -> tuple[str, int]:
    total = ctx.input["total"]
    assert isinstance(total, int)
    return str(ctx.input["user_id"]), total


class PaymentStep(Step):
    """Debit the order's total from the buyer's balance; refund it on compensation."""

    name = "payment"

    def __init__(self, shop: ShopStore, *, local: bool = True) -> None:
        self.shop = shop
        self.local = local

    async def do(self, ctx: StepContext) -> JSON:
        user_id, total = _payer(ctx)
        rejection = await self.shop.charge(ctx.idempotency_key, user_id, total)
        if rejection:
            raise StepFailed(rejection)
        return {"payment_id": ctx.idempotency_key, "amount": total}

    def local_action(self, ctx: StepContext, store: object) -> object | None:
        if not self.local:
            return None
        user_id, total = _payer(ctx)
        result: JSON = {"payment_id": ctx.idempotency_key, "amount": total}
        return self.shop.local_charge(store, ctx.idempotency_key, user_id, total, result)

    def local_compensation(self, ctx: StepContext, store: object) -> object | None:
        return self.shop.local_refund(store, ctx.idempotency_key) if self.local else None

    async def compensate(self, ctx: StepContext) -> None:
        self.after_compensation(ctx, await self.shop.refund(ctx.idempotency_key))

    def after_compensation(self, ctx: StepContext, outcome: JSON) -> None:
        if outcome:
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

    def __init__(self, shop: ShopStore, *, local: bool = True) -> None:
        self.shop = shop
        self.local = local

    async def do(self, ctx: StepContext) -> JSON:
        lines = _lines(ctx.input)
        rejection = await self.shop.reserve(ctx.idempotency_key, str(ctx.input["order_id"]), lines)
        if rejection:
            raise StepFailed(rejection)
        return {"reservation_id": ctx.idempotency_key}

    def local_action(self, ctx: StepContext, store: object) -> object | None:
        if not self.local:
            return None
        result: JSON = {"reservation_id": ctx.idempotency_key}
        order_id, lines = str(ctx.input["order_id"]), _lines(ctx.input)
        return self.shop.local_reserve(store, ctx.idempotency_key, order_id, lines, result)

    def local_compensation(self, ctx: StepContext, store: object) -> object | None:
        return self.shop.local_release(store, ctx.idempotency_key) if self.local else None

    async def compensate(self, ctx: StepContext) -> None:
        self.after_compensation(ctx, await self.shop.release(ctx.idempotency_key))

    def after_compensation(self, ctx: StepContext, outcome: JSON) -> None:
        if outcome:
            logger.info(
                "stock_released",
                extra={"reservation_id": ctx.idempotency_key, "items": ctx.input["items"]},
            )


class ShippingStep(Step):
    """Record a shipment to the order's address; cancel it on compensation."""

    name = "shipping"

    def __init__(self, shop: ShopStore, *, local: bool = True) -> None:
        self.shop = shop
        self.local = local

    async def do(self, ctx: StepContext) -> JSON:
        address = str(ctx.input["address"])
        rejection = await self.shop.ship(ctx.idempotency_key, str(ctx.input["order_id"]), address)
        if rejection:
            raise StepFailed(rejection)
        return {"shipment_id": ctx.idempotency_key}

    def local_action(self, ctx: StepContext, store: object) -> object | None:
        if not self.local:
            return None
        result: JSON = {"shipment_id": ctx.idempotency_key}
        order_id, address = str(ctx.input["order_id"]), str(ctx.input["address"])
        return self.shop.local_ship(store, ctx.idempotency_key, order_id, address, result)

    def local_compensation(self, ctx: StepContext, store: object) -> object | None:
        return self.shop.local_cancel_shipment(store, ctx.idempotency_key) if self.local else None

    async def compensate(self, ctx: StepContext) -> None:
        self.after_compensation(ctx, await self.shop.cancel_shipment(ctx.idempotency_key))

    def after_compensation(self, ctx: StepContext, outcome: JSON) -> None:
        if outcome:
            logger.info("shipment_cancelled", extra={"shipment_id": ctx.idempotency_key})


def checkout_saga(
    shop: ShopStore, *, compensation_retry: RetryPolicy | None = None, local: bool = True
) -> Saga:
    """The ``checkout`` saga: payment, then inventory, then shipping.

    ``compensation_retry`` replaces the steps' default compensation policy (an operator who
    wants a stuck compensation in front of them sooner than in half an hour). With ``local``
    (the default) each action runs as a local action of the saga store when the shop lives
    in the store's database: the effect and the step's record commit together.
    """
    steps: list[Step] = [
        PaymentStep(shop, local=local),
        InventoryStep(shop, local=local),
        ShippingStep(shop, local=local),
    ]
    if compensation_retry is not None:
        for step in steps:
            step.compensation_retry = compensation_retry
    return Saga(CHECKOUT, steps)
