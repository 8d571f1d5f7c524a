"""The checkout domain on PostgreSQL: orders read in one query, stock taken all or nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sagakit.shop.postgres import PostgresShop
from sagakit.shop.records import Item, User
from sagakit.shop.sqlite import NOT_ENOUGH_STOCK
from sagakit.store.postgres_db import PostgresDatabase


@pytest.fixture
async def shop(postgres_url: str) -> AsyncIterator[PostgresShop]:
    """A PostgreSQL shop with one user and two items (5 of a, 1 of b)."""
    db = await PostgresDatabase.connect(postgres_url, min_size=1, max_size=2)
    shop = PostgresShop(db)
    await shop.create_user(User(user_id="u", balance=1_000))
    await shop.create_item(Item(item_id="a", stock=5, price=10))
    await shop.create_item(Item(item_id="b", stock=1, price=20))
    try:
        yield shop
    finally:
        await db.close()


async def test_an_order_is_read_with_all_its_lines(shop: PostgresShop) -> None:
    """``get_order`` returns every line of a multi-line order, and none of another order's."""
    await shop.create_order("o1", "u", {"b": 1, "a": 3}, "1 Street")
    await shop.create_order("o2", "u", {"a": 1}, "1 Street")
    order = await shop.get_order("o1")
    assert order is not None
    assert (order.items, order.total) == ({"a": 3, "b": 1}, 50)
    other = await shop.get_order("o2")
    assert other is not None
    assert other.items == {"a": 1}
    assert await shop.get_order("missing") is None


async def test_a_refused_line_takes_no_stock_from_the_others(shop: PostgresShop) -> None:
    """A reservation whose second line lacks stock leaves the first line's stock untouched."""
    assert await shop.reserve("k1", "o1", {"a": 2, "b": 2}) == NOT_ENOUGH_STOCK
    a, b = await shop.get_item("a"), await shop.get_item("b")
    assert a is not None
    assert b is not None
    assert (a.stock, b.stock) == (5, 1)


async def test_a_single_line_reservation_takes_stock_or_is_refused(shop: PostgresShop) -> None:
    """One line: taken when there is enough, refused (and nothing taken) when there is not."""
    assert await shop.reserve("k1", "o1", {"a": 4}) is None
    assert await shop.reserve("k2", "o2", {"a": 4}) == NOT_ENOUGH_STOCK
    assert await shop.reserve("k1", "o1", {"a": 4}) is None  # a replay changes nothing
    item = await shop.get_item("a")
    assert item is not None
    assert item.stock == 1
    assert (await shop.ledger()).reserved == {"a": 4}
