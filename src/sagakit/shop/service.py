"""The checkout service: one store, the shop's tables, an orchestrator and a worker, together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from sagakit.errors import StoreError
from sagakit.observability.instruments import Instruments, instruments
from sagakit.observability.metrics import SagaMetrics
from sagakit.orchestrator import Probe, SagaOrchestrator
from sagakit.records import JSONObject, SagaInstance, SagaStatus
from sagakit.retry import DEFAULT_COMPENSATION_RETRY
from sagakit.settings import Settings
from sagakit.shop.base import ShopStore
from sagakit.shop.errors import CheckoutBlocked, NotFound
from sagakit.shop.participants import CHECKOUT, checkout_saga
from sagakit.shop.records import Order
from sagakit.store.base import SagaStore
from sagakit.worker import Worker

logger = logging.getLogger("sagakit.shop")


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckoutOutcome:
    """Where an order's checkout saga stood when the caller stopped waiting."""

    order_id: str
    saga: SagaInstance


class CheckoutService:
    """Checks orders out through the ``checkout`` saga, one saga per order."""

    def __init__(
        self,
        store: SagaStore,
        shop: ShopStore,
        orchestrator: SagaOrchestrator,
        instruments: Instruments | None = None,
    ):
        self.store = store
        self.shop = shop
        self.orchestrator = orchestrator
        #: The metrics (and tracer) whose listeners ``orchestrator`` was given.
        self.instruments = instruments or Instruments(metrics=SagaMetrics())

    async def checkout(self, order_id: str, *, wait_seconds: float) -> CheckoutOutcome:
        """Start (or join) the order's checkout and wait up to ``wait_seconds`` for its end.

        Raises ``NotFound`` for an unknown order and ``CheckoutBlocked`` when the order's
        last saga failed and waits for an operator.
        """
        order = await self.shop.get_order(order_id)
        if order is None:
            raise NotFound(f"order {order_id!r} not found")
        started = await self.orchestrator.start(
            CHECKOUT, checkout_input(order), business_key=order_id
        )
        saga = started.instance
        if saga.status is SagaStatus.FAILED:
            raise CheckoutBlocked(order_id, saga.saga_id, saga.error)
        if saga.status.is_active and wait_seconds > 0:
            saga = await self.orchestrator.wait(saga.saga_id, wait_seconds)
        return CheckoutOutcome(order_id=order_id, saga=saga)


def checkout_input(order: Order) -> JSONObject:
    """The saga's input: a snapshot of the order as it is checked out."""
    return {
        "order_id": order.order_id,
        "user_id": order.user_id,
        "items": dict(order.items),
        "address": order.address,
        "total": order.total,
    }


def crash_probe(spec: str) -> Probe:
    """A probe that kills this process with SIGKILL at ``point:step[#n]`` (tests only)."""
    target, _, nth = spec.partition("#")
    remaining = [int(nth) if nth else 1]

    def probe(point: str, step: str) -> None:
        if f"{point}:{step}" == target:
            remaining[0] -= 1
            if remaining[0] == 0:
                logger.warning("SAGAKIT_CRASH_AT=%s reached: killing this process", spec)
                os.kill(os.getpid(), signal.SIGKILL)

    return probe


async def open_shop(store: SagaStore) -> ShopStore:
    """The shop's tables in the store's own database, migrated."""
    from sagakit.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        from sagakit.shop.sqlite import SqliteShop

        sqlite_shop = SqliteShop(store.db)
        await asyncio.to_thread(sqlite_shop.migrate)
        return sqlite_shop
    # Compared by name, so that the PostgreSQL driver is imported only when it is used.
    if type(store).__name__ == "PostgresStore":
        from sagakit.shop.postgres import PostgresShop
        from sagakit.store.postgres import PostgresStore

        assert isinstance(store, PostgresStore)
        postgres_shop = PostgresShop(store.db)
        await postgres_shop.migrate()
        return postgres_shop
    raise StoreError(f"the checkout domain has no tables for {type(store).__name__}")


@contextlib.asynccontextmanager
async def running_service(
    settings: Settings, *, worker: bool = True
) -> AsyncIterator[CheckoutService]:
    """Open the store and the shop, load demo data if asked, and run a worker beside them."""
    from sagakit.store import open_store

    store = await open_store(settings.database_url)
    try:
        shop = await open_shop(store)
        if settings.demo_data and await shop.load_demo_data():
            logger.info("loaded the demo data")
        tools = instruments()
        compensation_retry = (
            replace(DEFAULT_COMPENSATION_RETRY, max_attempts=settings.compensation_attempts)
            if settings.compensation_attempts
            else None
        )
        remote = None
        amqp = None
        if settings.participants == "amqp":
            from sagakit.participants.amqp import AmqpParticipants
            from sagakit.participants.http import HttpParticipants

            amqp = AmqpParticipants(settings, store)
            await amqp.start()
            saga = amqp.checkout_saga(compensation_retry=compensation_retry)
            # Commands go through RabbitMQ; users and items are read and created over the
            # participants' HTTP APIs, which hold the real balances and stock.
            remote = HttpParticipants(settings)
            shop = remote.catalog(shop)
        elif settings.participants == "http":
            from sagakit.participants.http import HttpParticipants

            remote = HttpParticipants(settings)
            saga = remote.checkout_saga(compensation_retry=compensation_retry)
            shop = remote.catalog(shop)
        else:
            saga = checkout_saga(
                shop, compensation_retry=compensation_retry, local=settings.local_steps
            )
        orchestrator = SagaOrchestrator(
            store,
            [saga],
            lease_seconds=settings.lease_seconds,
            probe=crash_probe(settings.crash_at) if settings.crash_at else None,
            listeners=tools.listeners,
        )
        if amqp is not None:
            amqp.owner = orchestrator.owner
        service = CheckoutService(store, shop, orchestrator, tools)
        background = (
            asyncio.create_task(
                Worker(orchestrator, poll_seconds=settings.poll_seconds).run(),
                name="sagakit-worker",
            )
            if worker
            else None
        )
        try:
            yield service
        finally:
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
            await orchestrator.shutdown()
            tools.close()
            if remote is not None:
                await remote.close()
            if amqp is not None:
                await amqp.close()
    finally:
        await store.close()
