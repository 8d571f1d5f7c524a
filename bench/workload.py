"""The orders every target is loaded with, so the baseline and sagakit see the same pattern.

Order ``o<n>`` belongs to user ``u<n % USERS>``, buys one unit of item ``i<n % ITEMS>`` at
``PRICE``, and every tenth order (``n % 10 == 9``) has an empty address, so its checkout pays,
reserves, is refused by shipping and compensates: a 400 "Invalid shipping address".

Users and items are spread over many rows on purpose: one hot user row would make PostgreSQL
serialise every payment on a row lock, which measures the data set, not the service.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

USERS: Final = 1000
ITEMS: Final = 1000
PRICE: Final = 10
#: Enough that no run drains a balance or a stock: the only refusal is the address.
BALANCE: Final = 10**12
STOCK: Final = 10**12
ADDRESS: Final = "1 Benchmark Street"
INVALID_ADDRESS: Final = "Invalid shipping address"


@dataclass(frozen=True, slots=True)
class BenchOrder:
    """One order of the workload: a single line of quantity 1."""

    order_id: str
    user_id: str
    item_id: str
    address: str
    total: int = PRICE


def order(n: int, *, hot: bool = False) -> BenchOrder:
    """Order number ``n`` of the workload; ``hot``: every order on user ``u0`` and item ``i0``
    (one hot row each: the worst case for row locks, as in the original demo's perf.py)."""
    return BenchOrder(
        order_id=f"o{n}",
        user_id="u0" if hot else f"u{n % USERS}",
        item_id="i0" if hot else f"i{n % ITEMS}",
        address="" if n % 10 == 9 else ADDRESS,
    )


def orders(count: int, *, hot: bool = False) -> Iterator[BenchOrder]:
    """Orders ``o0`` to ``o<count - 1>`` (``hot``: all on one user and one item)."""
    return (order(n, hot=hot) for n in range(count))


def user_ids() -> list[str]:
    """Every user the orders belong to."""
    return [f"u{n}" for n in range(USERS)]


def item_ids() -> list[str]:
    """Every item the orders buy."""
    return [f"i{n}" for n in range(ITEMS)]
