"""The checkout domain on SQLite: an order read in one statement, its lines in item order."""

from __future__ import annotations

from pathlib import Path

from sagakit.service import opened_stores
from sagakit.shop.records import Item, User


async def test_an_order_is_read_with_all_its_lines_in_item_order(tmp_path: Path) -> None:
    """``get_order`` returns every line of a multi-line order, and none of another order's."""
    async with opened_stores(f"sqlite:///{tmp_path / 'shop.db'}") as (_, shop):
        await shop.create_user(User(user_id="u", balance=1_000))
        for item_id, price in (("c", 5), ("a", 10), ("b", 20)):
            await shop.create_item(Item(item_id=item_id, stock=5, price=price))
        await shop.create_order("o1", "u", {"c": 2, "b": 1, "a": 3}, "1 Street")
        await shop.create_order("o2", "u", {"a": 1}, "1 Street")

        order, other = await shop.get_order("o1"), await shop.get_order("o2")

        assert order is not None
        assert other is not None
        assert list(order.items.items()) == [("a", 3), ("b", 1), ("c", 2)]
        assert (order.user_id, order.address, order.total) == ("u", "1 Street", 60)
        assert other.items == {"a": 1}
        assert await shop.get_order("missing") is None
