"""The checkout domain on SQLite, sharing the saga store's database and its group commit."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Final

import orjson

from sagakit.errors import StepFailed
from sagakit.records import JSON, SagaStatus, now
from sagakit.shop import demo
from sagakit.shop.errors import AlreadyExists, InvalidOrder
from sagakit.shop.records import Item, Ledger, Order, OrderStatus, User
from sagakit.store.sqlite import SqliteAction, SqliteStore
from sagakit.store.sqlite_db import SqliteDatabase

logger = logging.getLogger("sagakit.shop")

INSUFFICIENT_BALANCE: Final = "Insufficient balance"
NOT_ENOUGH_STOCK: Final = "Not enough stock"
INVALID_ADDRESS: Final = "Invalid shipping address"
VOIDED: Final = "compensated before it was applied"
#: The largest amount, balance, stock or price: 2**53 - 1, exact in every JSON client.
MAX_AMOUNT: Final = 2**53 - 1

SELECT_USER: Final = "SELECT user_id, balance FROM users WHERE user_id = ?"
INSERT_USER: Final = "INSERT INTO users (user_id, balance) VALUES (?, ?)"
SELECT_ITEM: Final = "SELECT item_id, stock, price FROM items WHERE item_id = ?"
INSERT_ITEM: Final = "INSERT INTO items (item_id, stock, price) VALUES (?, ?, ?)"
SELECT_ORDER: Final = (
    "SELECT o.order_id, o.user_id, o.address, o.total,"
    " (SELECT s.status FROM saga_instances s WHERE s.name = 'checkout'"
    "  AND s.business_key = o.order_id ORDER BY s.seq DESC LIMIT 1),"
    # The lines in the same statement, as a JSON object in item order.
    " (SELECT json_group_object(l.item_id, l.qty) FROM"
    "  (SELECT item_id, qty FROM order_lines WHERE order_id = o.order_id ORDER BY item_id) l)"
    " FROM orders o WHERE o.order_id = ?"
)
INSERT_ORDER: Final = (
    "INSERT INTO orders (order_id, user_id, address, total, created_at) VALUES (?, ?, ?, ?, ?)"
)
INSERT_ORDER_LINE: Final = "INSERT INTO order_lines (order_id, item_id, qty) VALUES (?, ?, ?)"

SELECT_PAYMENT: Final = "SELECT status, user_id, amount FROM payments WHERE idempotency_key = ?"
DEBIT: Final = "UPDATE users SET balance = balance - ?1 WHERE user_id = ?2 AND balance >= ?1"
CREDIT: Final = "UPDATE users SET balance = balance + ? WHERE user_id = ?"
INSERT_PAYMENT: Final = (
    "INSERT INTO payments (idempotency_key, user_id, amount, status, updated_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
SET_PAYMENT: Final = "UPDATE payments SET status = ?, updated_at = ? WHERE idempotency_key = ?"

SELECT_RESERVATION: Final = "SELECT status, lines FROM reservations WHERE idempotency_key = ?"
TAKE_STOCK: Final = "UPDATE items SET stock = stock - ?1 WHERE item_id = ?2 AND stock >= ?1"
PUT_STOCK: Final = "UPDATE items SET stock = stock + ? WHERE item_id = ?"
INSERT_RESERVATION: Final = (
    "INSERT INTO reservations (idempotency_key, order_id, lines, status, updated_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
SET_RESERVATION: Final = (
    "UPDATE reservations SET status = ?, updated_at = ? WHERE idempotency_key = ?"
)

SELECT_SHIPMENT: Final = "SELECT status FROM shipments WHERE idempotency_key = ?"
INSERT_SHIPMENT: Final = (
    "INSERT INTO shipments (idempotency_key, order_id, address, status, updated_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
SET_SHIPMENT: Final = "UPDATE shipments SET status = ?, updated_at = ? WHERE idempotency_key = ?"

LEDGER: Final = (
    "SELECT (SELECT coalesce(sum(balance), 0) FROM users),"
    " (SELECT coalesce(sum(stock), 0) FROM items),"
    " (SELECT coalesce(sum(amount), 0) FROM payments WHERE status = 'charged'),"
    " (SELECT count(*) FROM shipments WHERE status = 'shipped')"
)
RESERVED_LINES: Final = "SELECT lines FROM reservations WHERE status = 'reserved'"


class SqliteShop:
    """A :class:`~sagakit.shop.base.ShopStore` in the saga store's SQLite database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    def migrate(self) -> int:
        """Create or upgrade the shop's tables (blocking: call from a thread)."""
        return self.db.migrate("shop", "sagakit.shop.migrations.sqlite")

    # -- users, items, orders ------------------------------------------------------------

    async def create_user(self, user: User) -> User:
        def work(conn: sqlite3.Connection) -> User:
            if conn.execute(SELECT_USER, (user.user_id,)).fetchone():
                raise AlreadyExists(f"user {user.user_id!r} already exists")
            conn.execute(INSERT_USER, (user.user_id, user.balance))
            return user

        return await self.db.write(work)

    async def get_user(self, user_id: str) -> User | None:
        row = await self.db.read(lambda conn: conn.execute(SELECT_USER, (user_id,)).fetchone())
        return None if row is None else User(user_id=row[0], balance=row[1])

    async def create_item(self, item: Item) -> Item:
        def work(conn: sqlite3.Connection) -> Item:
            if conn.execute(SELECT_ITEM, (item.item_id,)).fetchone():
                raise AlreadyExists(f"item {item.item_id!r} already exists")
            conn.execute(INSERT_ITEM, (item.item_id, item.stock, item.price))
            return item

        return await self.db.write(work)

    async def get_item(self, item_id: str) -> Item | None:
        row = await self.db.read(lambda conn: conn.execute(SELECT_ITEM, (item_id,)).fetchone())
        return None if row is None else Item(item_id=row[0], stock=row[1], price=row[2])

    async def create_order(
        self, order_id: str, user_id: str, items: dict[str, int], address: str
    ) -> Order:
        return await self.db.write(
            lambda conn: _insert_order(conn, order_id, user_id, items, address)
        )

    async def get_order(self, order_id: str) -> Order | None:
        def work(conn: sqlite3.Connection) -> Order | None:
            row = conn.execute(SELECT_ORDER, (order_id,)).fetchone()
            if row is None:
                return None
            lines: dict[str, int] = orjson.loads(row[5])
            saga_status = SagaStatus(row[4]) if row[4] else None
            return Order(
                order_id=row[0],
                user_id=row[1],
                items=lines,
                address=row[2],
                total=row[3],
                status=OrderStatus.of(saga_status),
            )

        return await self.db.read(work)

    # -- payment -------------------------------------------------------------------------

    async def charge(self, key: str, user_id: str, amount: int) -> str | None:
        return await self.db.write(lambda conn: _charge(conn, key, user_id, amount))

    def local_charge(
        self, store: object, key: str, user_id: str, amount: int, result: JSON
    ) -> SqliteAction | None:
        return self._local(store, lambda conn: _charge(conn, key, user_id, amount), result)

    async def refund(self, key: str) -> bool:
        return await self.db.write(lambda conn: _refund(conn, key))

    def local_refund(self, store: object, key: str) -> SqliteAction | None:
        return self._local_undo(store, lambda conn: _refund(conn, key))

    # -- inventory -----------------------------------------------------------------------

    async def reserve(self, key: str, order_id: str, lines: dict[str, int]) -> str | None:
        return await self.db.write(lambda conn: _reserve(conn, key, order_id, lines))

    def local_reserve(
        self, store: object, key: str, order_id: str, lines: dict[str, int], result: JSON
    ) -> SqliteAction | None:
        return self._local(store, lambda conn: _reserve(conn, key, order_id, lines), result)

    async def release(self, key: str) -> bool:
        return await self.db.write(lambda conn: _release(conn, key))

    def local_release(self, store: object, key: str) -> SqliteAction | None:
        return self._local_undo(store, lambda conn: _release(conn, key))

    # -- shipping ------------------------------------------------------------------------

    async def ship(self, key: str, order_id: str, address: str) -> str | None:
        return await self.db.write(lambda conn: _ship(conn, key, order_id, address))

    def local_ship(
        self, store: object, key: str, order_id: str, address: str, result: JSON
    ) -> SqliteAction | None:
        return self._local(store, lambda conn: _ship(conn, key, order_id, address), result)

    def _local(
        self, store: object, operation: Callable[[sqlite3.Connection], str | None], result: JSON
    ) -> SqliteAction | None:
        """``operation`` as a local action of ``store``, if the shop lives in its database."""
        if not isinstance(store, SqliteStore) or store.db is not self.db:
            return None

        def run(conn: sqlite3.Connection) -> JSON:
            refusal = operation(conn)
            if refusal:
                raise StepFailed(refusal)
            return result

        return SqliteAction(self.db, run)

    async def cancel_shipment(self, key: str) -> bool:
        return await self.db.write(lambda conn: _cancel_shipment(conn, key))

    def local_cancel_shipment(self, store: object, key: str) -> SqliteAction | None:
        return self._local_undo(store, lambda conn: _cancel_shipment(conn, key))

    def _local_undo(
        self, store: object, operation: Callable[[sqlite3.Connection], bool]
    ) -> SqliteAction | None:
        """A compensation as a local action of ``store``, if the shop lives in its database."""
        if not isinstance(store, SqliteStore) or store.db is not self.db:
            return None

        def run(conn: sqlite3.Connection) -> JSON:
            return operation(conn)

        return SqliteAction(self.db, run)

    # -- demo data and checks ------------------------------------------------------------

    async def load_demo_data(self) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            if conn.execute("SELECT 1 FROM users LIMIT 1").fetchone():
                return False
            conn.executemany(INSERT_USER, [(u.user_id, u.balance) for u in demo.USERS])
            conn.executemany(INSERT_ITEM, [(i.item_id, i.stock, i.price) for i in demo.ITEMS])
            for order in demo.ORDERS:
                _insert_order(conn, order.order_id, order.user_id, order.items, order.address)
            return True

        return await self.db.write(work)

    async def ledger(self) -> Ledger:
        def work(conn: sqlite3.Connection) -> Ledger:
            balance, stock, charged, shipments = conn.execute(LEDGER).fetchone()
            reserved: dict[str, int] = {}
            for (text,) in conn.execute(RESERVED_LINES):
                for item_id, qty in orjson.loads(text).items():
                    reserved[item_id] = reserved.get(item_id, 0) + qty
            return Ledger(
                balance=balance,
                stock=stock,
                charged=charged,
                reserved=reserved,
                shipments=shipments,
            )

        return await self.db.read(work)


def replayed(status: str, applied: str, rejection: str) -> str | None:
    """The answer to an action replayed with a key already in the inbox."""
    if status == applied:
        return None
    if status == "rejected":
        return rejection
    # Compensated (or tombstoned) before this replay: refuse rather than apply it late.
    return VOIDED


def _charge(conn: sqlite3.Connection, key: str, user_id: str, amount: int) -> str | None:
    seen = conn.execute(SELECT_PAYMENT, (key,)).fetchone()
    if seen is not None:
        return replayed(seen[0], "charged", INSUFFICIENT_BALANCE)
    debited = conn.execute(DEBIT, (amount, user_id)).rowcount == 1
    status = "charged" if debited else "rejected"
    conn.execute(INSERT_PAYMENT, (key, user_id, amount, status, now()))
    return None if debited else INSUFFICIENT_BALANCE


def _reserve(
    conn: sqlite3.Connection, key: str, order_id: str, lines: dict[str, int]
) -> str | None:
    seen = conn.execute(SELECT_RESERVATION, (key,)).fetchone()
    if seen is not None:
        return replayed(seen[0], "reserved", NOT_ENOUGH_STOCK)
    conn.execute("SAVEPOINT reserve")
    taken = all(
        conn.execute(TAKE_STOCK, (qty, item_id)).rowcount == 1
        for item_id, qty in sorted(lines.items())
    )
    if not taken:
        conn.execute("ROLLBACK TO reserve")
    conn.execute("RELEASE reserve")
    status = "reserved" if taken else "rejected"
    conn.execute(INSERT_RESERVATION, (key, order_id, orjson.dumps(lines).decode(), status, now()))
    return None if taken else NOT_ENOUGH_STOCK


def _ship(conn: sqlite3.Connection, key: str, order_id: str, address: str) -> str | None:
    seen = conn.execute(SELECT_SHIPMENT, (key,)).fetchone()
    if seen is not None:
        return replayed(seen[0], "shipped", INVALID_ADDRESS)
    valid = bool(address.strip())
    status = "shipped" if valid else "rejected"
    conn.execute(INSERT_SHIPMENT, (key, order_id, address, status, now()))
    return None if valid else INVALID_ADDRESS


def _insert_order(
    conn: sqlite3.Connection, order_id: str, user_id: str, items: dict[str, int], address: str
) -> Order:
    if not items:
        raise InvalidOrder("an order needs at least one item")
    if conn.execute("SELECT 1 FROM orders WHERE order_id = ?", (order_id,)).fetchone():
        raise AlreadyExists(f"order {order_id!r} already exists")
    if conn.execute(SELECT_USER, (user_id,)).fetchone() is None:
        raise InvalidOrder(f"unknown user {user_id!r}")
    total = 0
    for item_id, qty in items.items():
        row = conn.execute(SELECT_ITEM, (item_id,)).fetchone()
        if row is None:
            raise InvalidOrder(f"unknown item {item_id!r}")
        total += qty * row[2]
    if total > MAX_AMOUNT:
        raise InvalidOrder(f"the order's total exceeds {MAX_AMOUNT}")
    conn.execute(INSERT_ORDER, (order_id, user_id, address, total, now()))
    conn.executemany(INSERT_ORDER_LINE, [(order_id, i, q) for i, q in sorted(items.items())])
    return Order(
        order_id=order_id,
        user_id=user_id,
        items=dict(sorted(items.items())),
        address=address,
        total=total,
    )


def _refund(conn: sqlite3.Connection, key: str) -> bool:
    """Undo the charge ``key`` (or leave a tombstone); whether money moved."""
    seen = conn.execute(SELECT_PAYMENT, (key,)).fetchone()
    if seen is None:
        conn.execute(INSERT_PAYMENT, (key, "", 0, "voided", now()))
        return False
    status, user_id, amount = seen
    if status != "charged":
        return False
    conn.execute(CREDIT, (amount, user_id))
    conn.execute(SET_PAYMENT, ("refunded", now(), key))
    return True


def _release(conn: sqlite3.Connection, key: str) -> bool:
    """Put the reservation ``key`` back (or leave a tombstone); whether stock moved."""
    seen = conn.execute(SELECT_RESERVATION, (key,)).fetchone()
    if seen is None:
        conn.execute(INSERT_RESERVATION, (key, "", "{}", "voided", now()))
        return False
    if seen[0] != "reserved":
        return False
    lines: dict[str, int] = orjson.loads(seen[1])
    conn.executemany(PUT_STOCK, [(qty, item_id) for item_id, qty in lines.items()])
    conn.execute(SET_RESERVATION, ("released", now(), key))
    return True


def _cancel_shipment(conn: sqlite3.Connection, key: str) -> bool:
    """Cancel the shipment ``key`` (or leave a tombstone); whether one was."""
    seen = conn.execute(SELECT_SHIPMENT, (key,)).fetchone()
    if seen is None:
        conn.execute(INSERT_SHIPMENT, (key, "", "", "voided", now()))
        return False
    if seen[0] != "shipped":
        return False
    conn.execute(SET_SHIPMENT, ("cancelled", now(), key))
    return True
