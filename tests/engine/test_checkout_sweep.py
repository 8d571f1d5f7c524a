"""The checkout saga under ``crash_sweep``: crashed and recovered at every point it reaches,
on SQLite and PostgreSQL, with its actions local (one transaction with the step's record) or
not, the shop's totals moving exactly as a run without a crash moves them."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from sagakit.records import SagaInstance, SagaStatus
from sagakit.saga import Saga
from sagakit.shop import demo
from sagakit.shop.base import ShopStore
from sagakit.shop.checkout import checkout_input
from sagakit.shop.local_participants import checkout_saga
from sagakit.shop.postgres import PostgresShop
from sagakit.shop.records import Ledger
from sagakit.shop.sqlite import SqliteShop
from sagakit.store import SagaStore, open_store
from sagakit.store.postgres import PostgresStore
from sagakit.store.sqlite import SqliteStore
from sagakit.testing import crash_sweep
from tests.conftest import _empty

ORDERS = {order.order_id: order for order in demo.ORDERS}
FORWARD = [
    f"{p}:{s}" for s in ("payment", "inventory", "shipping") for p in ("before_do", "after_do")
]
BACKWARD = [f"{p}_compensate:{s}" for s in ("inventory", "payment") for p in ("before", "after")]
#: Where each demo order's run goes: order1 completes, order2 is refused by the payment,
#: order3 by the shipping (after payment and inventory, which are compensated).
POINTS = {"order1": FORWARD, "order2": FORWARD[:1], "order3": FORWARD[:5] + BACKWARD}


async def open_shop(store: SagaStore) -> ShopStore:
    """The shop's tables in the saga store's own database, migrated."""
    if isinstance(store, SqliteStore):
        sqlite_shop = SqliteShop(store.db)
        await asyncio.to_thread(sqlite_shop.migrate)
        return sqlite_shop
    assert isinstance(store, PostgresStore)
    postgres_shop = PostgresShop(store.db)
    await postgres_shop.migrate()
    return postgres_shop


def _delta(before: Ledger, after: Ledger) -> tuple[int, int, int, int, int]:
    """How a run moved the shop: balance, stock, charged, shipments, units reserved."""
    return (
        after.balance - before.balance,
        after.stock - before.stock,
        after.charged - before.charged,
        after.shipments - before.shipments,
        sum(after.reserved.values()) - sum(before.reserved.values()),
    )


class CheckoutUnderSweep:
    """A fresh shop for every run of the sweep, and the check of what the run did to it."""

    def __init__(self, url: str | None, tmp_path: Path, *, local: bool) -> None:
        self.url, self.tmp_path, self.local = url, tmp_path, local
        self.runs = itertools.count()
        self.shop: ShopStore | None = None
        self.before: Ledger | None = None
        self.deltas: list[tuple[int, int, int, int, int]] = []

    async def store(self) -> SagaStore:
        """SQLite: a new file per run; PostgreSQL: the test database, emptied."""
        if self.url is None:
            return await open_store(f"sqlite:///{self.tmp_path / f'run{next(self.runs)}.db'}")
        await _empty(self.url)
        return await open_store(self.url)

    async def saga(self, store: SagaStore) -> Saga:
        """The checkout over the demo shop, in the run's store."""
        self.shop = await open_shop(store)
        await self.shop.load_demo_data()
        self.before = await self.shop.ledger()
        return checkout_saga(self.shop, local=self.local)

    async def check(self, ended: SagaInstance) -> None:
        """Every run moves the shop's totals as the first (the run without a crash) did."""
        assert self.shop is not None
        assert self.before is not None
        self.deltas.append(_delta(self.before, await self.shop.ledger()))
        assert self.deltas[-1] == self.deltas[0], (
            f"shop moved {self.deltas[-1]}, not {self.deltas[0]}"
        )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("local", [True, False], ids=["local", "separate-commits"])
@pytest.mark.parametrize(
    ("order_id", "status", "moved"),
    [
        ("order1", SagaStatus.COMPLETED, (-20, -2, 20, 1, 2)),
        ("order2", SagaStatus.COMPENSATED, (0, 0, 0, 0, 0)),
        ("order3", SagaStatus.COMPENSATED, (0, 0, 0, 0, 0)),
    ],
)
async def test_checkout_survives_a_crash_at_every_point_it_reaches(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    backend: str,
    local: bool,
    order_id: str,
    status: SagaStatus,
    moved: tuple[int, int, int, int, int],
) -> None:
    """Each demo order, crashed at each point: same outcome, each effect once or undone once."""
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    checkout = CheckoutUnderSweep(url, tmp_path, local=local)

    report = await crash_sweep(
        checkout.saga,
        checkout_input(ORDERS[order_id]),
        store=checkout.store,
        check=checkout.check,
    )

    assert report.status == status
    assert report.unreached == []
    assert checkout.deltas[0] == moved
    assert len(checkout.deltas) == len(report.points) + 1
    assert report.points == POINTS[order_id]
