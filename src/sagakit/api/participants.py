"""One participant (payment, inventory or shipping) as a small FastAPI service.

Each service owns its database and reuses the shop's SQL: every command carries the
step's idempotency key in an ``Idempotency-Key`` header, and the effect and its inbox row
commit in one transaction, so a command delivered twice (a retry after a lost reply, a
duplicate) is applied once. A compensation that finds no action leaves a tombstone, and a
late action with that key is then refused (409), never applied.

Answers: ``200`` with the result; ``409 {"error"}`` for a business refusal; anything else
(``5xx``, no answer) is transient, and the caller retries with the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Final, Literal

from fastapi import APIRouter, FastAPI, Header, HTTPException, Request
from pydantic import Field
from starlette.responses import Response

from sagakit.api.errors import install_error_handlers
from sagakit.api.responses import JSONResponse
from sagakit.api.schemas import (
    ID_PATTERN,
    Amount,
    Id,
    ItemIn,
    ItemOut,
    Quantity,
    Strict,
    UserIn,
    UserOut,
)
from sagakit.errors import StoreError
from sagakit.settings import Settings
from sagakit.shop import commands, demo
from sagakit.shop.base import ShopStore
from sagakit.shop.errors import AlreadyExists
from sagakit.shop.records import Item, User

logger = logging.getLogger("sagakit.participants")

Kind = Literal["payment", "inventory", "shipping"]
KINDS: Final[tuple[Kind, ...]] = ("payment", "inventory", "shipping")
#: Where each participant listens unless told otherwise (the checkout service is on 8000).
DEFAULT_PORTS: Final[dict[Kind, int]] = {"payment": 8001, "inventory": 8002, "shipping": 8003}

Key = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200)]


class ChargeIn(Strict):
    """A charge: debit ``amount`` from the user's balance."""

    user_id: Id
    amount: Amount


class ReserveIn(Strict):
    """A reservation: take every line from stock, all or nothing."""

    order_id: Id
    lines: dict[Annotated[str, Field(pattern=ID_PATTERN)], Quantity] = Field(min_length=1)


class ShipIn(Strict):
    """A shipment of an order to an address."""

    order_id: Id
    address: str = Field(max_length=10_000)


async def open_participant_shop(url: str) -> tuple[ShopStore, Callable[[], Awaitable[None]]]:
    """The shop's tables in the database ``url`` names, migrated, and how to close it.

    Each participant runs the shop's whole migration in its own database and uses only its
    own tables (payment: users, payments; inventory: items, reservations; shipping:
    shipments): one schema to keep, at the price of a few empty tables.
    """
    if url.startswith("sqlite:"):
        from sagakit.shop.sqlite import SqliteShop
        from sagakit.store.sqlite_db import SqliteDatabase, path_from_url

        sqlite_db = SqliteDatabase(path_from_url(url))
        sqlite_shop = SqliteShop(sqlite_db)
        await asyncio.to_thread(sqlite_shop.migrate)
        sqlite_db.start()
        return sqlite_shop, sqlite_db.close
    if url.startswith(("postgresql:", "postgres:")):
        from sagakit.shop.postgres import PostgresShop
        from sagakit.store.postgres_db import PostgresDatabase

        postgres_db = await PostgresDatabase.connect(url)
        postgres_shop = PostgresShop(postgres_db)
        try:
            await postgres_shop.migrate()
        except BaseException:
            await postgres_db.close()
            raise
        return postgres_shop, postgres_db.close
    raise StoreError(f"a participant needs a sqlite:/// or postgresql:// URL, not {url!r}")


async def load_demo_data(kind: Kind, shop: ShopStore) -> int:
    """The demo users (payment) or items (inventory) this participant lacks; how many."""
    loaded = 0
    records: tuple[User, ...] | tuple[Item, ...] = (
        demo.USERS if kind == "payment" else demo.ITEMS if kind == "inventory" else ()
    )
    for record in records:
        with contextlib.suppress(AlreadyExists):
            if isinstance(record, User):
                await shop.create_user(record)
            else:
                await shop.create_item(record)
            loaded += 1
    return loaded


def refusal(message: str) -> Response:
    """A business refusal: the command applied nothing and will not."""
    return JSONResponse({"error": message}, status_code=409)


def _shop(request: Request) -> ShopStore:
    shop: ShopStore = request.app.state.shop
    return shop


async def _action(
    request: Request,
    apply: Callable[[ShopStore], Awaitable[str | None]],
    answer: dict[str, object],
) -> Response:
    """Run an action command: ``answer``, or 409 with its refusal."""
    rejection = await apply(_shop(request))
    if rejection:
        return refusal(rejection)
    return JSONResponse(answer)


async def _undo(request: Request, undo: Callable[[ShopStore], Awaitable[bool]]) -> Response:
    """Run a compensation: ``{"undone": ...}``."""
    return JSONResponse({"undone": await undo(_shop(request))})


def payment_router() -> APIRouter:
    """``POST /payment/charge|refund``, and the users whose balances it holds."""
    router = APIRouter(tags=["payment"])

    @router.post("/payment/charge")
    async def charge(body: ChargeIn, key: Key, request: Request) -> Response:
        """Debit the amount once per key; 409 when the balance does not cover it."""
        return await _action(
            request,
            lambda shop: shop.charge(key, body.user_id, body.amount),
            {"payment_id": key, "amount": body.amount},
        )

    @router.post("/payment/refund")
    async def refund(key: Key, request: Request) -> Response:
        """Refund the charge ``key`` once (or leave a tombstone if it never came)."""
        return await _undo(request, lambda shop: shop.refund(key))

    @router.get("/users/{user_id}")
    async def get_user(user_id: Id, request: Request) -> UserOut:
        """A user and their balance."""
        user = await _shop(request).get_user(user_id)
        if user is None:
            raise HTTPException(status_code=404, detail=f"user {user_id!r} not found")
        return UserOut(user_id=user.user_id, balance=user.balance)

    @router.post("/users", status_code=201)
    async def create_user(body: UserIn, request: Request) -> UserOut:
        """Create a user with a balance."""
        await _shop(request).create_user(User(user_id=body.user_id, balance=body.balance))
        return UserOut(user_id=body.user_id, balance=body.balance)

    return router


def inventory_router() -> APIRouter:
    """``POST /inventory/reserve|release``, and the items whose stock it holds."""
    router = APIRouter(tags=["inventory"])

    @router.post("/inventory/reserve")
    async def reserve(body: ReserveIn, key: Key, request: Request) -> Response:
        """Reserve every line once per key; 409 when one is short."""
        return await _action(
            request,
            lambda shop: shop.reserve(key, body.order_id, body.lines),
            {"reservation_id": key},
        )

    @router.post("/inventory/release")
    async def release(key: Key, request: Request) -> Response:
        """Put the reservation ``key`` back once (or leave a tombstone)."""
        return await _undo(request, lambda shop: shop.release(key))

    @router.get("/items/{item_id}")
    async def get_item(item_id: Id, request: Request) -> ItemOut:
        """An item, its stock and its price."""
        item = await _shop(request).get_item(item_id)
        if item is None:
            raise HTTPException(status_code=404, detail=f"item {item_id!r} not found")
        return ItemOut(item_id=item.item_id, stock=item.stock, price=item.price)

    @router.post("/items", status_code=201)
    async def create_item(body: ItemIn, request: Request) -> ItemOut:
        """Create an item with its stock and price."""
        item = Item(item_id=body.item_id, stock=body.stock, price=body.price)
        await _shop(request).create_item(item)
        return ItemOut(item_id=item.item_id, stock=item.stock, price=item.price)

    return router


def shipping_router() -> APIRouter:
    """``POST /shipping/ship|cancel``."""
    router = APIRouter(tags=["shipping"])

    @router.post("/shipping/ship")
    async def ship(body: ShipIn, key: Key, request: Request) -> Response:
        """Record the shipment once per key; 409 for a blank address."""
        return await _action(
            request,
            lambda shop: shop.ship(key, body.order_id, body.address),
            {"shipment_id": key},
        )

    @router.post("/shipping/cancel")
    async def cancel(key: Key, request: Request) -> Response:
        """Cancel the shipment ``key`` once (or leave a tombstone)."""
        return await _undo(request, lambda shop: shop.cancel_shipment(key))

    return router


ROUTERS: Final[dict[Kind, Callable[[], APIRouter]]] = {
    "payment": payment_router,
    "inventory": inventory_router,
    "shipping": shipping_router,
}


def create_participant_app(
    kind: Kind, settings: Settings, *, transport: Literal["http", "amqp"] = "http"
) -> FastAPI:
    """The ``kind`` participant's app over ``settings.database_url``.

    Its lifespan opens and migrates the database and, unless ``settings.demo_data`` is
    off, loads the demo users (payment) or items (inventory) it lacks. With the ``amqp``
    transport it also consumes its command queue at ``settings.amqp_url`` while it runs;
    its HTTP API stays up either way (the checkout service reads and creates users and
    items through it: queries over HTTP, commands over the broker).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        shop, close = await open_participant_shop(settings.database_url)
        try:
            if settings.demo_data and (loaded := await load_demo_data(kind, shop)):
                logger.info("loaded %d demo records into the %s participant", loaded, kind)
            app.state.shop = shop
            if transport == "amqp":
                from sagakit.transports.amqp.consumer import consuming

                async with consuming(kind, settings, commands.handlers(shop)):
                    yield
            else:
                yield
        finally:
            await close()

    app = FastAPI(
        title=f"sagakit {kind} participant",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    install_error_handlers(app)
    app.include_router(ROUTERS[kind]())

    @app.get("/healthz", tags=["health"])
    async def healthz(request: Request) -> dict[str, str]:
        """200 once the database answers."""
        await _shop(request).get_user("healthz")
        return {"status": "ok", "participant": kind}

    return app
