"""The original demo's data, loaded into an empty database so its README's curl works."""

from __future__ import annotations

from typing import Final

from sagakit.shop.records import Item, Order, User

USERS: Final = (User(user_id="user1", balance=100), User(user_id="user2", balance=5))
ITEMS: Final = (
    Item(item_id="item1", stock=5, price=10),
    Item(item_id="item2", stock=3, price=10),
)
ORDERS: Final = (
    # Completes: user1 can pay 20, item1 is in stock, the address is valid.
    Order(order_id="order1", user_id="user1", items={"item1": 2}, address="Some Street", total=20),
    # Payment fails first: user2 holds 5, the order costs 10.
    Order(order_id="order2", user_id="user2", items={"item2": 1}, address="", total=10),
    # Shipping refuses the empty address, after payment and inventory were done.
    Order(order_id="order3", user_id="user1", items={"item2": 1}, address="", total=10),
)
