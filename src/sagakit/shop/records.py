"""The checkout domain's records."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sagakit.records import SagaStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """A buyer and the money they hold, in minor units."""

    user_id: str
    balance: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    """Something for sale: how many are left and what one costs, in minor units."""

    item_id: str
    stock: int
    price: int


class OrderStatus(enum.StrEnum):
    """An order's status, derived from its latest checkout saga."""

    NEW = "new"
    CHECKING_OUT = "checking_out"
    COMPLETED = "completed"
    FAILED = "failed"

    @classmethod
    def of(cls, saga_status: SagaStatus | None) -> OrderStatus:
        """The order status that its latest saga's status implies."""
        if saga_status is None:
            return cls.NEW
        if saga_status.is_active:
            return cls.CHECKING_OUT
        if saga_status is SagaStatus.COMPLETED:
            return cls.COMPLETED
        return cls.FAILED


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    """What a user asked for, where to send it, and what it costs."""

    order_id: str
    user_id: str
    items: dict[str, int]
    address: str
    total: int
    status: OrderStatus = OrderStatus.NEW


@dataclass(frozen=True, slots=True, kw_only=True)
class Ledger:
    """Totals across the whole shop, to check that nothing was created or lost."""

    balance: int
    stock: int
    charged: int
    reserved: dict[str, int]
    shipments: int
