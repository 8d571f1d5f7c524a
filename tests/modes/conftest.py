"""The checkout service in each of its three modes, started once per test module.

``inprocess``: ``sagakit serve`` with its participants in the same process and database;
``http``: ``SAGAKIT_PARTICIPANTS=http`` and three ``sagakit participant KIND`` processes;
``amqp``: ``SAGAKIT_PARTICIPANTS=amqp`` and three ``sagakit participant KIND --transport
amqp`` processes on RabbitMQ (skipped when it does not answer). Each mode is a real process
tree on fresh databases; tests read every effect in the database of the service that owns
it (in-process, that is the one database), so they must use records of their own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Final

import httpx
import pytest
import pytest_asyncio

from sagakit.api.participants import Kind
from tests.amqp.conftest import AmqpDistributed, rabbitmq_answers
from tests.distributed.conftest import Distributed
from tests.processes import ADMIN_HEADERS, PATIENT, ServeProcess
from tests.recovery.conftest import Sagakit, read_only

MODES: Final = ("inprocess", "http", "amqp")
Row = tuple[object, ...]


class Deployment:
    """One mode's running checkout: its HTTP server and its services' databases."""

    def __init__(self, mode: str, launcher: Sagakit, server: ServeProcess) -> None:
        self.mode = mode
        self.launcher = launcher
        self.server = server

    def client(self) -> httpx.AsyncClient:
        """A client of the checkout service (close it)."""
        return self.server.client()

    # -- the services' databases ---------------------------------------------------------

    def db_of(self, kind: Kind) -> Path:
        """The database that holds the ``kind`` participant's tables in this mode."""
        if isinstance(self.launcher, Distributed):
            return self.launcher.participant_db(kind)
        return self.launcher.db_path

    def rows_of(self, kind: Kind, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Every row of a read-only query on the ``kind`` participant's database."""
        with read_only(self.db_of(kind)) as conn:
            return [tuple(row) for row in conn.execute(sql, params).fetchall()]

    def balance(self, user_id: str) -> int:
        """The user's balance at the payment service."""
        [(value,)] = self.rows_of(
            "payment", "SELECT balance FROM users WHERE user_id = ?", [user_id]
        )
        assert isinstance(value, int)
        return value

    def stock(self, item_id: str) -> int:
        """The item's stock at the inventory service."""
        [(value,)] = self.rows_of(
            "inventory", "SELECT stock FROM items WHERE item_id = ?", [item_id]
        )
        assert isinstance(value, int)
        return value

    def payment(self, saga_id: str) -> Row | None:
        """The saga's payment record ``(user_id, amount, status)``, if any."""
        rows = self.rows_of(
            "payment",
            "SELECT user_id, amount, status FROM payments WHERE idempotency_key = ?",
            [f"{saga_id}:payment"],
        )
        return rows[0] if rows else None

    def reservation(self, saga_id: str) -> Row | None:
        """The saga's reservation record ``(lines, status)`` (lines as a dict), if any."""
        rows = self.rows_of(
            "inventory",
            "SELECT lines, status FROM reservations WHERE idempotency_key = ?",
            [f"{saga_id}:inventory"],
        )
        return (json.loads(str(rows[0][0])), rows[0][1]) if rows else None

    def shipment(self, saga_id: str) -> Row | None:
        """The saga's shipment record ``(order_id, address, status)``, if any."""
        rows = self.rows_of(
            "shipping",
            "SELECT order_id, address, status FROM shipments WHERE idempotency_key = ?",
            [f"{saga_id}:shipping"],
        )
        return rows[0] if rows else None

    def effects(self, saga_id: str) -> tuple[object, object, object]:
        """The statuses of the saga's payment, reservation and shipment (``None``: absent)."""

        def status(record: Row | None) -> object:
            return None if record is None else record[-1]

        return (
            status(self.payment(saga_id)),
            status(self.reservation(saga_id)),
            status(self.shipment(saga_id)),
        )

    def charged_to(self, user_id: str) -> int:
        """The sum of the user's charges still in force."""
        [(value,)] = self.rows_of(
            "payment",
            "SELECT coalesce(sum(amount), 0) FROM payments"
            " WHERE user_id = ? AND status = 'charged'",
            [user_id],
        )
        assert isinstance(value, int)
        return value

    def reserved_of(self, item_id: str) -> int:
        """How many of the item the reservations still in force hold."""
        rows = self.rows_of("inventory", "SELECT lines FROM reservations WHERE status = 'reserved'")
        return sum(int(json.loads(str(lines)).get(item_id, 0)) for (lines,) in rows)

    def sagas_of(self, order_id: str) -> list[Row]:
        """``(saga_id, status)`` of every checkout saga of the order, oldest first."""
        return self.launcher.rows(
            "SELECT saga_id, status FROM saga_instances WHERE business_key = ? ORDER BY seq",
            (order_id,),
        )

    # -- records of a test's own ---------------------------------------------------------

    async def add_user(self, client: httpx.AsyncClient, user_id: str, balance: int) -> None:
        """A user with ``balance``, created through the checkout service's admin API (which
        creates it at the payment service, and in its catalog copy when distributed)."""
        body = {"user_id": user_id, "balance": balance}
        response = await client.post("/users", json=body, headers=ADMIN_HEADERS)
        assert response.status_code == 201, response.text

    async def add_item(
        self, client: httpx.AsyncClient, item_id: str, stock: int, price: int = 10
    ) -> None:
        """An item with ``stock``, created through the checkout service's admin API."""
        body = {"item_id": item_id, "stock": stock, "price": price}
        response = await client.post("/items", json=body, headers=ADMIN_HEADERS)
        assert response.status_code == 201, response.text

    async def add_order(
        self,
        client: httpx.AsyncClient,
        order_id: str,
        user_id: str,
        items: Mapping[str, int],
        address: str = "1 Main Street",
    ) -> None:
        """An order, created through the checkout service."""
        body = {"order_id": order_id, "user_id": user_id, "items": dict(items), "address": address}
        response = await client.post("/orders", json=body)
        assert response.status_code == 201, response.text


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=MODES)
async def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    """The checkout in one mode, on fresh databases (and queues); killed after the module."""
    mode: str = request.param
    if mode == "amqp" and not rabbitmq_answers():
        pytest.skip("RabbitMQ does not answer on 127.0.0.1:5672")
    tmp = tmp_path_factory.mktemp(mode)
    launcher: Sagakit
    if mode == "amqp":
        launcher = AmqpDistributed(tmp)
    elif mode == "http":
        launcher = Distributed(tmp)
    else:
        launcher = Sagakit(tmp)
    try:
        if isinstance(launcher, Distributed):
            server = await launcher.start()
        else:
            server = await launcher.serve(env=PATIENT)
        yield Deployment(mode, launcher, server)
    finally:
        launcher.close()
        if isinstance(launcher, AmqpDistributed):
            await launcher.delete_queues()
