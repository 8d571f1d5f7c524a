"""Fresh databases for a run: created, migrated by sagakit itself, then bulk-loaded with orders.

sagakit migrates its own schema (``sagakit serve --no-demo-data`` does it on start); these
functions only add rows, straight into the shop's tables, far faster than ``POST /orders``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench import workload

DEFAULT_POSTGRES: str = "postgresql://postgres@127.0.0.1:5432/postgres"


def _order_rows(count: int, hot: bool = False) -> Iterator[tuple[str, str, str, int, float]]:
    created = time.time()
    for o in workload.orders(count, hot=hot):
        yield (o.order_id, o.user_id, o.address, o.total, created)


def _line_rows(count: int, hot: bool = False) -> Iterator[tuple[str, str, int]]:
    for o in workload.orders(count, hot=hot):
        yield (o.order_id, o.item_id, 1)


def load_sqlite(path: str, count: int) -> None:
    """Add the workload's users, items and ``count`` orders to a migrated SQLite file."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO users (user_id, balance) VALUES (?, ?)",
            [(u, workload.BALANCE) for u in workload.user_ids()],
        )
        conn.executemany(
            "INSERT INTO items (item_id, stock, price) VALUES (?, ?, ?)",
            [(i, workload.STOCK, workload.PRICE) for i in workload.item_ids()],
        )
        conn.executemany(
            "INSERT INTO orders (order_id, user_id, address, total, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            _order_rows(count),
        )
        conn.executemany(
            "INSERT INTO order_lines (order_id, item_id, qty) VALUES (?, ?, ?)",
            _line_rows(count),
        )
        conn.execute("COMMIT")
        # A checkpoint now, so the run does not start by copying the load out of the WAL.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("ANALYZE users")
        conn.execute("ANALYZE items")
        conn.execute("ANALYZE orders")
        conn.execute("ANALYZE order_lines")
    finally:
        conn.close()


async def load_postgres(url: str, count: int, *, hot: bool = False) -> None:
    """Add the workload's users, items and ``count`` orders to a migrated PostgreSQL database
    (``hot``: every order on one user and one item)."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "users", records=[(u, workload.BALANCE) for u in workload.user_ids()]
            )
            await conn.copy_records_to_table(
                "items",
                records=[(i, workload.STOCK, workload.PRICE) for i in workload.item_ids()],
            )
            orders, lines = _order_rows(count, hot), _line_rows(count, hot)
            await conn.copy_records_to_table("orders", records=list(orders))
            await conn.copy_records_to_table("order_lines", records=list(lines))
        # Statistics for the rows just loaded only: the saga tables are left as sagakit
        # finds them on a new database (never analysed), not "analysed while empty".
        await conn.execute("ANALYZE users, items, orders, order_lines")
    finally:
        await conn.close()


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _admin(admin_url: str, statement: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def fresh_postgres(admin_url: str, label: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped on the way out."""
    name = f"sagakit_bench_{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(admin_url, name)
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def fresh_sqlite(directory: str, label: str) -> Iterator[str]:
    """The path of a new SQLite file in ``directory``, deleted (with its WAL) on the way out."""
    path = os.path.join(directory, f"{label}-{os.getpid()}-{uuid.uuid4().hex[:6]}.db")
    try:
        yield path
    finally:
        for suffix in ("", "-wal", "-shm"):
            with suppress(FileNotFoundError):
                os.remove(path + suffix)
