"""The checkout's commands to remote participants: what each step sends, and how it applies.

Whatever carries them (HTTP requests, RabbitMQ messages), the checkout's steps send the
same commands: ``charge``/``refund`` to payment, ``reserve``/``release`` to inventory,
``ship``/``cancel`` to shipping, each with the step's idempotency key. A participant
applies one through its shop's inbox SQL (the effect and its inbox row in one
transaction), so a command applied twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from sagakit.records import JSONObject
from sagakit.saga import StepContext
from sagakit.shop.base import ShopStore

#: (step, action, compensation) of the checkout, in order.
PLAN: Final = (
    ("payment", "charge", "refund"),
    ("inventory", "reserve", "release"),
    ("shipping", "ship", "cancel"),
)

Body = Callable[[StepContext], JSONObject]
#: A participant's handling of one command: (key, body) to the answer it replies.
Handler = Callable[[str, JSONObject], Awaitable[JSONObject]]
Apply = Callable[[ShopStore, str, JSONObject], Awaitable[JSONObject]]


def charge_body(ctx: StepContext) -> JSONObject:
    """What ``charge`` carries: the buyer and the order's total."""
    return {"user_id": ctx.input["user_id"], "amount": ctx.input["total"]}


def reserve_body(ctx: StepContext) -> JSONObject:
    """What ``reserve`` carries: the order and its lines."""
    return {"order_id": ctx.input["order_id"], "lines": ctx.input["items"]}


def ship_body(ctx: StepContext) -> JSONObject:
    """What ``ship`` carries: the order and its address."""
    return {"order_id": ctx.input["order_id"], "address": ctx.input["address"]}


#: Each step's action body (compensations carry only the key).
BODIES: Final[dict[str, Body]] = {
    "payment": charge_body,
    "inventory": reserve_body,
    "shipping": ship_body,
}


async def _charge(shop: ShopStore, key: str, body: JSONObject) -> JSONObject:
    amount = body["amount"]
    assert isinstance(amount, int)
    rejection = await shop.charge(key, str(body["user_id"]), amount)
    return _answer(rejection, {"payment_id": key, "amount": amount})


async def _reserve(shop: ShopStore, key: str, body: JSONObject) -> JSONObject:
    lines = body["lines"]
    assert isinstance(lines, dict)
    quantities = {str(item): value for item, value in lines.items() if isinstance(value, int)}
    if len(quantities) != len(lines):
        raise ValueError(f"reserve: every quantity must be an integer, not {lines!r}")
    rejection = await shop.reserve(key, str(body["order_id"]), quantities)
    return _answer(rejection, {"reservation_id": key})


async def _ship(shop: ShopStore, key: str, body: JSONObject) -> JSONObject:
    rejection = await shop.ship(key, str(body["order_id"]), str(body["address"]))
    return _answer(rejection, {"shipment_id": key})


def _answer(rejection: str | None, result: JSONObject) -> JSONObject:
    if rejection:
        return {"outcome": "refused", "error": rejection}
    return {"outcome": "ok", "result": result}


def _undo(undo: Callable[[ShopStore, str], Awaitable[bool]]) -> Apply:
    async def apply(shop: ShopStore, key: str, body: JSONObject) -> JSONObject:
        return {"outcome": "ok", "result": {"undone": await undo(shop, key)}}

    return apply


#: How a participant applies each command to its shop: the answer it replies.
COMMANDS: Final[dict[str, Apply]] = {
    "charge": _charge,
    "refund": _undo(lambda shop, key: shop.refund(key)),
    "reserve": _reserve,
    "release": _undo(lambda shop, key: shop.release(key)),
    "ship": _ship,
    "cancel": _undo(lambda shop, key: shop.cancel_shipment(key)),
}


def handlers(shop: ShopStore) -> dict[str, Handler]:
    """The commands, applied to ``shop``."""

    def bound(apply: Apply) -> Handler:
        async def handle(key: str, body: JSONObject) -> JSONObject:
            return await apply(shop, key, body)

        return handle

    return {kind: bound(apply) for kind, apply in COMMANDS.items()}
