"""The checkout domain on PostgreSQL, in the saga store's database.

The same operations as ``sqlite.py``, safe for many processes at once: an inbox row is
claimed with ``INSERT ... ON CONFLICT DO NOTHING`` (which waits for a concurrent holder of
the same key), so two processes replaying one step apply its effect once.
"""

from __future__ import annotations

from typing import Final

import orjson

from sagakit.records import JSON, SagaStatus, now
from sagakit.shop import demo
from sagakit.shop.errors import AlreadyExists, InvalidOrder
from sagakit.shop.records import Item, Ledger, Order, OrderStatus, User
from sagakit.shop.sqlite import (
    MAX_AMOUNT,
)
from sagakit.store.postgres import PostgresAction, PostgresCall, PostgresStore
from sagakit.store.postgres_db import Connection, PostgresDatabase

SELECT_USER: Final = "SELECT user_id, balance FROM users WHERE user_id = $1"
INSERT_USER: Final = (
    "INSERT INTO users (user_id, balance) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING user_id"
)
SELECT_ITEM: Final = "SELECT item_id, stock, price FROM items WHERE item_id = $1"
SELECT_PRICES: Final = "SELECT item_id, price FROM items WHERE item_id = ANY($1::text[])"
INSERT_ITEM: Final = (
    "INSERT INTO items (item_id, stock, price) VALUES ($1, $2, $3)"
    " ON CONFLICT DO NOTHING RETURNING item_id"
)
SELECT_ORDER: Final = (
    "SELECT o.order_id, o.user_id, o.address, o.total,"
    " (SELECT s.status FROM saga_instances s WHERE s.name = 'checkout'"
    "  AND s.business_key = o.order_id ORDER BY s.seq DESC LIMIT 1) AS saga_status,"
    " ARRAY(SELECT l.item_id FROM order_lines l WHERE l.order_id = o.order_id"
    "  ORDER BY l.item_id) AS line_items,"
    " ARRAY(SELECT l.qty FROM order_lines l WHERE l.order_id = o.order_id"
    "  ORDER BY l.item_id) AS line_qtys"
    " FROM orders o WHERE o.order_id = $1"
)
INSERT_ORDER: Final = (
    "INSERT INTO orders (order_id, user_id, address, total, created_at)"
    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING order_id"
)
INSERT_ORDER_LINES: Final = (
    "INSERT INTO order_lines (order_id, item_id, qty)"
    " SELECT $1, item, qty FROM unnest($2::text[], $3::bigint[]) AS l(item, qty)"
)

LEDGER: Final = (
    "SELECT (SELECT coalesce(sum(balance), 0) FROM users) AS balance,"
    " (SELECT coalesce(sum(stock), 0) FROM items) AS stock,"
    " (SELECT coalesce(sum(amount), 0) FROM payments WHERE status = 'charged') AS charged,"
    " (SELECT count(*) FROM shipments WHERE status = 'shipped') AS shipments"
)
RESERVED_LINES: Final = "SELECT lines::text AS lines FROM reservations WHERE status = 'reserved'"


class PostgresShop:
    """A :class:`~sagakit.shop.base.ShopStore` in the saga store's PostgreSQL database."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def migrate(self) -> int:
        """Create or upgrade the shop's tables."""
        return await self.db.migrate("shop", "sagakit.shop.migrations.postgres")

    # -- users, items, orders ------------------------------------------------------------

    async def create_user(self, user: User) -> User:
        async with self.db.connection() as conn:
            if await conn.fetchval(INSERT_USER, user.user_id, user.balance) is None:
                raise AlreadyExists(f"user {user.user_id!r} already exists")
        return user

    async def get_user(self, user_id: str) -> User | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(SELECT_USER, user_id)
        return None if row is None else User(user_id=row["user_id"], balance=row["balance"])

    async def create_item(self, item: Item) -> Item:
        async with self.db.connection() as conn:
            if await conn.fetchval(INSERT_ITEM, item.item_id, item.stock, item.price) is None:
                raise AlreadyExists(f"item {item.item_id!r} already exists")
        return item

    async def get_item(self, item_id: str) -> Item | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(SELECT_ITEM, item_id)
        if row is None:
            return None
        return Item(item_id=row["item_id"], stock=row["stock"], price=row["price"])

    async def create_order(
        self, order_id: str, user_id: str, items: dict[str, int], address: str
    ) -> Order:
        async with self.db.transaction() as conn:
            return await _insert_order(conn, order_id, user_id, items, address)

    async def get_order(self, order_id: str) -> Order | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(SELECT_ORDER, order_id)  # one round trip, lines too
        if row is None:
            return None
        lines = dict(zip(row["line_items"], row["line_qtys"], strict=True))
        saga_status = SagaStatus(row["saga_status"]) if row["saga_status"] else None
        return Order(
            order_id=row["order_id"],
            user_id=row["user_id"],
            items=lines,
            address=row["address"],
            total=row["total"],
            status=OrderStatus.of(saga_status),
        )

    # -- payment, inventory, shipping ---------------------------------------------------
    # Each operation is one SQL function (migration 0002): one statement, one round trip;
    # an action is also a PostgresCall, which a saga run as one unit sends with its own
    # statements.

    async def charge(self, key: str, user_id: str, amount: int) -> str | None:
        return await self._refusal(_charge(key, user_id, amount, None))

    def local_charge(
        self, store: object, key: str, user_id: str, amount: int, result: JSON
    ) -> PostgresAction | None:
        return self._local(store, _charge(key, user_id, amount, result))

    async def refund(self, key: str) -> bool:
        return await self._undone(_undo("sagakit_shop_refund", key))

    def local_refund(self, store: object, key: str) -> PostgresAction | None:
        return self._local_undo(store, _undo("sagakit_shop_refund", key))

    async def reserve(self, key: str, order_id: str, lines: dict[str, int]) -> str | None:
        return await self._refusal(_reserve(key, order_id, lines, None))

    def local_reserve(
        self, store: object, key: str, order_id: str, lines: dict[str, int], result: JSON
    ) -> PostgresAction | None:
        return self._local(store, _reserve(key, order_id, lines, result))

    async def release(self, key: str) -> bool:
        return await self._undone(_undo("sagakit_shop_release", key))

    def local_release(self, store: object, key: str) -> PostgresAction | None:
        return self._local_undo(store, _undo("sagakit_shop_release", key))

    async def ship(self, key: str, order_id: str, address: str) -> str | None:
        return await self._refusal(_ship(key, order_id, address, None))

    def local_ship(
        self, store: object, key: str, order_id: str, address: str, result: JSON
    ) -> PostgresAction | None:
        return self._local(store, _ship(key, order_id, address, result))

    async def cancel_shipment(self, key: str) -> bool:
        return await self._undone(_undo("sagakit_shop_cancel_shipment", key))

    def local_cancel_shipment(self, store: object, key: str) -> PostgresAction | None:
        return self._local_undo(store, _undo("sagakit_shop_cancel_shipment", key))

    async def _refusal(self, call: PostgresCall) -> str | None:
        """Run the action ``call`` on its own, in a transaction: the refusal's message, or
        None when it applied. (The explicit transaction keeps what a stalled process does
        as it was: its session idles in it, and the server ends it, rolling it back.)"""
        async with self.db.transaction(call.function) as conn:
            refusal: str | None = await conn.fetchval(f"SELECT {call.expression(1)}", *call.args)
        return refusal

    async def _undone(self, call: PostgresCall) -> bool:
        """Run the compensation ``call`` on its own, in a transaction: whether it moved money
        or stock."""
        async with self.db.transaction(call.function) as conn:
            return bool(await conn.fetchval(f"SELECT {call.expression(1)}", *call.args))

    def _local(self, store: object, call: PostgresCall) -> PostgresAction | None:
        """The action ``call`` as a local action of ``store``, if the shop lives in its
        database."""
        if not isinstance(store, PostgresStore) or store.db is not self.db:
            return None
        return PostgresAction.of_call(self.db, call)

    def _local_undo(self, store: object, call: PostgresCall) -> PostgresAction | None:
        """A compensation as a local action of ``store``, if the shop lives in its database."""
        if not isinstance(store, PostgresStore) or store.db is not self.db:
            return None

        async def run(conn: Connection) -> JSON:
            return bool(await conn.fetchval(f"SELECT {call.expression(1)}", *call.args))

        return PostgresAction(self.db, run)

    # -- demo data and checks ------------------------------------------------------------

    async def load_demo_data(self) -> bool:
        async with self.db.transaction("demo data") as conn:
            # Serialise concurrent first starts: only one loads the data.
            await conn.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
            if await conn.fetchval("SELECT 1 FROM users LIMIT 1"):
                return False
            for user in demo.USERS:
                await conn.execute(INSERT_USER, user.user_id, user.balance)
            for item in demo.ITEMS:
                await conn.execute(INSERT_ITEM, item.item_id, item.stock, item.price)
            for order in demo.ORDERS:
                await _insert_order(conn, order.order_id, order.user_id, order.items, order.address)
            return True

    async def ledger(self) -> Ledger:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(LEDGER)
            assert row is not None
            reserved: dict[str, int] = {}
            for r in await conn.fetch(RESERVED_LINES):
                for item_id, qty in orjson.loads(r["lines"]).items():
                    reserved[item_id] = reserved.get(item_id, 0) + qty
        return Ledger(
            balance=row["balance"],
            stock=row["stock"],
            charged=row["charged"],
            reserved=reserved,
            shipments=row["shipments"],
        )


async def _insert_order(
    conn: Connection, order_id: str, user_id: str, items: dict[str, int], address: str
) -> Order:
    if not items:
        raise InvalidOrder("an order needs at least one item")
    if await conn.fetchrow(SELECT_USER, user_id) is None:
        raise InvalidOrder(f"unknown user {user_id!r}")
    prices = {r["item_id"]: r["price"] for r in await conn.fetch(SELECT_PRICES, list(items))}
    unknown = sorted(set(items) - set(prices))
    if unknown:
        raise InvalidOrder(f"unknown item {unknown[0]!r}")
    total = sum(qty * prices[item] for item, qty in items.items())
    if total > MAX_AMOUNT:
        raise InvalidOrder(f"the order's total exceeds {MAX_AMOUNT}")
    if await conn.fetchval(INSERT_ORDER, order_id, user_id, address, total, now()) is None:
        raise AlreadyExists(f"order {order_id!r} already exists")
    ordered = sorted(items.items())
    await conn.execute(
        INSERT_ORDER_LINES, order_id, [i for i, _ in ordered], [q for _, q in ordered]
    )
    return Order(
        order_id=order_id, user_id=user_id, items=dict(ordered), address=address, total=total
    )


def _charge(key: str, user_id: str, amount: int, result: JSON) -> PostgresCall:
    return PostgresCall(
        "sagakit_shop_charge",
        (key, user_id, amount, now()),
        ("text", "text", "bigint", "float8"),
        result,
    )


def _reserve(key: str, order_id: str, lines: dict[str, int], result: JSON) -> PostgresCall:
    return PostgresCall(
        "sagakit_shop_reserve",
        (key, order_id, orjson.dumps(lines).decode(), now()),
        ("text", "text", "jsonb", "float8"),
        result,
    )


def _ship(key: str, order_id: str, address: str, result: JSON) -> PostgresCall:
    return PostgresCall(
        "sagakit_shop_ship",
        (key, order_id, address, bool(address.strip()), now()),
        ("text", "text", "text", "bool", "float8"),
        result,
    )


def _undo(function: str, key: str) -> PostgresCall:
    """The compensation ``function`` of the action ``key`` (it answers whether it moved money
    or stock, not a refusal: run it with ``fetchval``, not as a step's action)."""
    return PostgresCall(function, (key, now()), ("text", "float8"), None)
