"""Users, items and orders."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from sagakit.api.deps import AdminOnly, ItemId, OrderId, Service, UserId
from sagakit.api.schemas import Error, ItemIn, ItemOut, OrderIn, OrderOut, UserIn, UserOut
from sagakit.records import new_id
from sagakit.shop.records import Item, Order, User

router = APIRouter()

ADMIN_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": Error, "description": "admin token missing or wrong"},
    403: {"model": Error, "description": "a viewer token: admin only"},
    409: {"model": Error, "description": "id taken"},
    422: {"model": Error, "description": "invalid body"},
}


def _order_out(order: Order) -> OrderOut:
    return OrderOut(
        order_id=order.order_id,
        user_id=order.user_id,
        items=order.items,
        address=order.address,
        total=order.total,
        status=order.status.value,
    )


def _missing(what: str, ident: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"{what} {ident!r} not found")


@router.get("/users/{user_id}", tags=["users"], responses={404: {"model": Error}})
async def get_user(user_id: UserId, service: Service) -> UserOut:
    """A user and their balance."""
    user = await service.shop.get_user(user_id)
    if user is None:
        raise _missing("user", user_id)
    return UserOut(user_id=user.user_id, balance=user.balance)


@router.post(
    "/users", tags=["users"], status_code=201, dependencies=[AdminOnly], responses=ADMIN_ERRORS
)
async def create_user(body: UserIn, service: Service) -> UserOut:
    """Create a user with a balance (admin)."""
    user = await service.shop.create_user(User(user_id=body.user_id, balance=body.balance))
    return UserOut(user_id=user.user_id, balance=user.balance)


@router.get("/items/{item_id}", tags=["items"], responses={404: {"model": Error}})
async def get_item(item_id: ItemId, service: Service) -> ItemOut:
    """An item, its stock and its price."""
    item = await service.shop.get_item(item_id)
    if item is None:
        raise _missing("item", item_id)
    return ItemOut(item_id=item.item_id, stock=item.stock, price=item.price)


@router.post(
    "/items", tags=["items"], status_code=201, dependencies=[AdminOnly], responses=ADMIN_ERRORS
)
async def create_item(body: ItemIn, service: Service) -> ItemOut:
    """Create an item with its stock and price (admin)."""
    item = await service.shop.create_item(
        Item(item_id=body.item_id, stock=body.stock, price=body.price)
    )
    return ItemOut(item_id=item.item_id, stock=item.stock, price=item.price)


@router.get("/orders/{order_id}", tags=["orders"], responses={404: {"model": Error}})
async def get_order(order_id: OrderId, service: Service) -> OrderOut:
    """An order with its total and its status."""
    order = await service.shop.get_order(order_id)
    if order is None:
        raise _missing("order", order_id)
    return _order_out(order)


@router.post(
    "/orders",
    tags=["orders"],
    status_code=201,
    responses={
        409: {"model": Error, "description": "id taken"},
        422: {"model": Error, "description": "unknown user or item, bad quantity, no items"},
    },
)
async def create_order(body: OrderIn, service: Service) -> OrderOut:
    """Create an order; its total is priced now, and its id generated when absent."""
    order = await service.shop.create_order(
        body.order_id or new_id(), body.user_id, dict(body.items), body.address
    )
    return _order_out(order)
