"""The checkout distributed: three ``sagakit participant`` processes and ``sagakit serve``.

Each participant owns its SQLite file; the checkout service (in ``SAGAKIT_PARTICIPANTS=http``
mode) owns the sagas, the orders and its catalog copy. Tests kill any of them with SIGKILL,
restart it on the same port, and check the effects in each service's own database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Final

import httpx
import pytest

from sagakit.api.participants import KINDS, Kind
from tests.processes import ADMIN_HEADERS, PATIENT, ServeProcess, free_port
from tests.recovery.conftest import Sagakit, read_only


class Distributed(Sagakit):
    """Starts the participants and the checkout service; reads each one's database."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.ports: dict[Kind, int] = {kind: free_port() for kind in KINDS}
        self.participant_env: dict[Kind, dict[str, str]] = {kind: {} for kind in KINDS}
        self.participants: dict[Kind, ServeProcess] = {}

    def participant_url(self, kind: Kind) -> str:
        """Where the ``kind`` participant listens."""
        return f"http://127.0.0.1:{self.ports[kind]}"

    def participant_db(self, kind: Kind) -> Path:
        """The ``kind`` participant's own SQLite file."""
        return self.tmp / f"{kind}.db"

    async def participant(
        self, kind: Kind, *, env: Mapping[str, str] | None = None
    ) -> ServeProcess:
        """Start (or restart, on its port) the ``kind`` participant; return once healthy."""
        if env is not None:
            self.participant_env[kind] = dict(env)
        args = ["participant", kind, "--port", str(self.ports[kind])]
        args += ["--database-url", f"sqlite:///{self.participant_db(kind)}"]
        process = await self.launch_server(self.ports[kind], args, self.participant_env[kind])
        self.participants[kind] = process
        return process

    def http_env(self) -> dict[str, str]:
        """The checkout service's settings for HTTP participants."""
        return {
            "SAGAKIT_PARTICIPANTS": "http",
            "SAGAKIT_PAYMENT_URL": self.participant_url("payment"),
            "SAGAKIT_INVENTORY_URL": self.participant_url("inventory"),
            "SAGAKIT_SHIPPING_URL": self.participant_url("shipping"),
            **PATIENT,
        }

    async def serve(
        self, *, crash_at: str | None = None, env: Mapping[str, str] | None = None
    ) -> ServeProcess:
        """Start ``sagakit serve`` in HTTP mode on the checkout's database."""
        return await super().serve(crash_at=crash_at, env={**self.http_env(), **(env or {})})

    async def start(
        self,
        *,
        participant_env: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ServeProcess:
        """The three participants (each with ``participant_env``), then the checkout service."""
        await asyncio.gather(*(self.participant(kind, env=participant_env) for kind in KINDS))
        return await self.serve(env=env)

    # -- reading the participants' databases ---------------------------------------------

    def connect_to(self, kind: Kind) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A read-only connection to the ``kind`` participant's database."""
        return read_only(self.participant_db(kind))

    def rows_of(
        self, kind: Kind, sql: str, params: Sequence[object] = ()
    ) -> list[tuple[object, ...]]:
        """Every row of a read-only query on the ``kind`` participant's database."""
        with self.connect_to(kind) as conn:
            return [tuple(row) for row in conn.execute(sql, params).fetchall()]

    def integer_of(self, kind: Kind, sql: str, params: Sequence[object] = ()) -> int:
        """A read-only query's single integer answer, on the ``kind`` participant."""
        [(value,)] = self.rows_of(kind, sql, params)
        assert isinstance(value, int), (sql, value)
        return value

    def keys_of(self, kind: Kind, table: str, status: str) -> set[str]:
        """The idempotency keys of the ``kind`` participant's rows in ``status``."""
        rows = self.rows_of(
            kind, f"SELECT idempotency_key FROM {table} WHERE status = ?", (status,)
        )
        return {str(key) for (key,) in rows}

    def completed_sagas(self) -> set[str]:
        """The ids of the completed checkout sagas, from the checkout service's database."""
        rows = self.rows("SELECT saga_id FROM saga_instances WHERE status = 'completed'")
        return {str(saga_id) for (saga_id,) in rows}

    def assert_exactly_once(self, *, balance: int, stock: int) -> None:
        """Money and stock are conserved, and each completed saga's effects exist once.

        ``balance`` and ``stock`` are the totals the participants started with. Every
        charge, reservation and shipment still in force belongs to a completed saga, and
        every completed saga has each of them (their keys are the inboxes' primary keys).
        """
        assert self.active_sagas() == 0, self.statuses()
        charged = self.integer_of(
            "payment", "SELECT coalesce(sum(amount), 0) FROM payments WHERE status = 'charged'"
        )
        assert self.integer_of("payment", "SELECT sum(balance) FROM users") + charged == balance
        reserved = sum(
            sum(int(q) for q in json.loads(str(lines)).values())
            for (lines,) in self.rows_of(
                "inventory", "SELECT lines FROM reservations WHERE status = 'reserved'"
            )
        )
        assert self.integer_of("inventory", "SELECT sum(stock) FROM items") + reserved == stock
        completed = self.completed_sagas()
        assert self.keys_of("payment", "payments", "charged") == {f"{s}:payment" for s in completed}
        assert self.keys_of("inventory", "reservations", "reserved") == {
            f"{s}:inventory" for s in completed
        }
        assert self.keys_of("shipping", "shipments", "shipped") == {
            f"{s}:shipping" for s in completed
        }

    async def wait_all_finished(self, timeout: float = 45.0) -> None:
        """Return once no saga is running or compensating; fail after ``timeout`` seconds."""
        await super().wait_all_finished(timeout)


@pytest.fixture
async def distributed(tmp_path: Path) -> AsyncIterator[Distributed]:
    """A launcher of the distributed checkout on fresh databases; kills it all at teardown."""
    launcher = Distributed(tmp_path)
    try:
        yield launcher
    finally:
        launcher.close()


async def create_orders(
    client: httpx.AsyncClient, count: int, *, price: int = 10, blank_every: int = 4
) -> list[str]:
    """A buyer rich enough for ``count`` orders, a ``widget`` in stock, and the orders.

    Every ``blank_every``-th order has a blank address, so shipping refuses it and its
    payment and reservation are compensated. The user and the item are created through
    the checkout service's admin API, which creates them at the participants too.
    """
    user = {"user_id": "buyer", "balance": 1_000_000}
    item = {"item_id": "widget", "stock": 10_000, "price": price}
    assert (await client.post("/users", json=user, headers=ADMIN_HEADERS)).status_code == 201
    assert (await client.post("/items", json=item, headers=ADMIN_HEADERS)).status_code == 201
    orders = []
    for n in range(count):
        address = "" if n % blank_every == blank_every - 1 else f"{n} Main Street"
        body = {"order_id": f"o{n}", "user_id": "buyer", "items": {"widget": 1 + n % 3}}
        response = await client.post("/orders", json={**body, "address": address})
        assert response.status_code == 201, response.text
        orders.append(f"o{n}")
    return orders


#: The totals the participants hold after ``create_orders``, with the demo data.
BALANCE: Final = 1_000_000 + 100 + 5
STOCK: Final = 10_000 + 5 + 3
