"""The checkout domain's storage seam: every backend keeps effects and inbox rows together."""

from __future__ import annotations

from typing import Protocol

from sagakit.records import JSON
from sagakit.shop.records import Item, Ledger, Order, User


class ShopStore(Protocol):
    """Users, items and orders, and the participants' idempotent operations.

    Each participant operation is one transaction holding both the effect and the inbox
    row keyed by ``key``, so a replay with the same key changes nothing. The operations
    return ``None`` on success and a rejection message on a business refusal.
    """

    async def create_user(self, user: User) -> User:
        """Insert ``user``; raise ``AlreadyExists``."""
        ...

    async def get_user(self, user_id: str) -> User | None:
        """The user, or ``None``."""
        ...

    async def create_item(self, item: Item) -> Item:
        """Insert ``item``; raise ``AlreadyExists``."""
        ...

    async def get_item(self, item_id: str) -> Item | None:
        """The item, or ``None``."""
        ...

    async def create_order(
        self, order_id: str, user_id: str, items: dict[str, int], address: str
    ) -> Order:
        """Insert an order priced now; raise ``AlreadyExists`` or ``InvalidOrder``."""
        ...

    async def get_order(self, order_id: str) -> Order | None:
        """The order with its status derived from its latest checkout saga, or ``None``."""
        ...

    async def charge(self, key: str, user_id: str, amount: int) -> str | None:
        """Debit ``amount`` if the balance covers it."""
        ...

    async def refund(self, key: str) -> bool:
        """Undo the charge ``key`` (or leave a tombstone); whether money moved."""
        ...

    async def reserve(self, key: str, order_id: str, lines: dict[str, int]) -> str | None:
        """Take every line from stock, all or nothing."""
        ...

    async def release(self, key: str) -> bool:
        """Put the reservation ``key`` back (or leave a tombstone); whether stock moved."""
        ...

    async def ship(self, key: str, order_id: str, address: str) -> str | None:
        """Record a shipment to a non-blank ``address``."""
        ...

    async def cancel_shipment(self, key: str) -> bool:
        """Cancel the shipment ``key`` (or leave a tombstone); whether one was cancelled."""
        ...

    def local_charge(
        self, store: object, key: str, user_id: str, amount: int, result: JSON
    ) -> object | None:
        """``charge`` as a local action of ``store`` returning ``result``, or ``None``."""
        ...

    def local_reserve(
        self, store: object, key: str, order_id: str, lines: dict[str, int], result: JSON
    ) -> object | None:
        """``reserve`` as a local action of ``store`` returning ``result``, or ``None``."""
        ...

    def local_ship(
        self, store: object, key: str, order_id: str, address: str, result: JSON
    ) -> object | None:
        """``ship`` as a local action of ``store`` returning ``result``, or ``None``."""
        ...

    def local_refund(self, store: object, key: str) -> object | None:
        """``refund`` as a local action of ``store``, or ``None``."""
        ...

    def local_release(self, store: object, key: str) -> object | None:
        """``release`` as a local action of ``store``, or ``None``."""
        ...

    def local_cancel_shipment(self, store: object, key: str) -> object | None:
        """``cancel_shipment`` as a local action of ``store``, or ``None``."""
        ...

    async def load_demo_data(self) -> bool:
        """Load the demo users, items and orders if there are no users; whether it did."""
        ...

    async def ledger(self) -> Ledger:
        """Totals, for conservation checks."""
        ...
