"""The composition root: store, shop, saga, orchestrator and worker, built from the settings.

``sagakit serve``, ``sagakit worker``, the tests and the benchmarks all start the checkout
service here; nothing below this module knows which transport or store was chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

from sagakit.errors import StoreError
from sagakit.observability.instruments import instruments
from sagakit.orchestrator import Probe, SagaOrchestrator
from sagakit.retry import DEFAULT_COMPENSATION_RETRY
from sagakit.settings import Settings
from sagakit.shop.base import ShopStore
from sagakit.shop.checkout import CheckoutService
from sagakit.shop.local_participants import checkout_saga
from sagakit.store.base import SagaStore
from sagakit.worker import Worker

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("sagakit.shop")


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
    settings: Settings, *, worker: bool = True, probe: Probe | None = None
) -> AsyncIterator[CheckoutService]:
    """Open the store and the shop, load demo data if asked, and run a worker beside them.

    ``probe`` is called at each crash point of the orchestrator (the tests kill the
    process there).
    """
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
            from sagakit.transports.amqp.relay import AmqpParticipants
            from sagakit.transports.http import HttpParticipants

            amqp = AmqpParticipants(settings, store)
            await amqp.start()
            saga = amqp.checkout_saga(compensation_retry=compensation_retry)
            # Commands go through RabbitMQ; users and items are read and created over the
            # participants' HTTP APIs, which hold the real balances and stock.
            remote = HttpParticipants(settings)
            shop = remote.catalog(shop)
        elif settings.participants == "http":
            from sagakit.transports.http import HttpParticipants

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
            probe=probe,
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


def create_app(settings: Settings | None = None) -> FastAPI:
    """The checkout service's app over ``settings``; its lifespan runs the service."""
    from sagakit.api import app as api_app

    return api_app.create_app(settings or Settings(), running_service)


def create_app_from_env() -> FastAPI:
    """The app configured from ``SAGAKIT_*`` variables (for ``uvicorn --factory``).

    Each process ``serve --workers N`` starts builds its app here, and sets its logging up
    as the ``sagakit`` command does.
    """
    from sagakit.observability.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
