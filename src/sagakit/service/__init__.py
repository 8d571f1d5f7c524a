"""The composition root: store, shop, saga, orchestrator and worker, built from the settings.

``sagakit serve``, ``sagakit worker``, the tests and the benchmarks all start the checkout
service here. It alone knows every part: the store a URL names, the shop's tables in the
same database, and the transport that reaches the participants (in this process, over
HTTP, or through RabbitMQ); nothing below it picks a backend or a transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sagakit.errors import StoreError
from sagakit.observability.instruments import instruments
from sagakit.orchestrator import Probe, SagaOrchestrator
from sagakit.service.remote import opened_participants
from sagakit.settings import Settings
from sagakit.shop.base import ShopStore
from sagakit.shop.checkout import CheckoutService
from sagakit.store.base import SagaStore
from sagakit.worker import Worker

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("sagakit.shop")


@contextlib.asynccontextmanager
async def opened_stores(url: str) -> AsyncIterator[tuple[SagaStore, ShopStore]]:
    """The saga store ``url`` names and the shop's tables in its database, migrated.

    The driver is imported only for its own URL scheme.
    """
    if url.startswith("sqlite:"):
        from sagakit.shop.sqlite import SqliteShop
        from sagakit.store.sqlite import SqliteStore

        sqlite_store = await SqliteStore.open(url)
        try:
            sqlite_shop = SqliteShop(sqlite_store.db)
            await asyncio.to_thread(sqlite_shop.migrate)
            yield sqlite_store, sqlite_shop
        finally:
            await sqlite_store.close()
    elif url.startswith(("postgresql:", "postgres:")):
        from sagakit.shop.postgres import PostgresShop
        from sagakit.store.postgres import PostgresStore

        postgres_store = await PostgresStore.open(url)
        try:
            postgres_shop = PostgresShop(postgres_store.db)
            await postgres_shop.migrate()
            yield postgres_store, postgres_shop
        finally:
            await postgres_store.close()
    else:
        from sagakit.store import open_store

        # An unknown scheme is refused by ``open_store``; ``memory://`` has no shop tables.
        await (await open_store(url)).close()
        raise StoreError(f"the checkout service needs sqlite:/// or postgresql://, not {url!r}")


@contextlib.asynccontextmanager
async def running_service(
    settings: Settings, *, worker: bool = True, probe: Probe | None = None
) -> AsyncIterator[CheckoutService]:
    """Open the store and the shop, load demo data if asked, and run a worker beside them.

    ``probe`` is called at each crash point of the orchestrator (the tests kill the
    process there).
    """
    async with opened_stores(settings.database_url) as (store, shop):
        if settings.demo_data and await shop.load_demo_data():
            logger.info("loaded the demo data")
        async with opened_participants(settings, store, shop) as participants:
            tools = instruments()
            orchestrator = SagaOrchestrator(
                store,
                [participants.saga],
                lease_seconds=settings.lease_seconds,
                probe=probe,
                listeners=tools.listeners,
                one_unit=settings.one_unit and probe is None,
            )
            if participants.amqp is not None:
                participants.amqp.owner = orchestrator.owner
            try:
                async with _worker(orchestrator, settings, run=worker):
                    yield CheckoutService(store, participants.shop, orchestrator, tools)
            finally:
                await orchestrator.shutdown()
                tools.close()


@contextlib.asynccontextmanager
async def _worker(
    orchestrator: SagaOrchestrator, settings: Settings, *, run: bool
) -> AsyncIterator[None]:
    """A worker in the background while the context is open (if ``run``)."""
    if not run:
        yield
        return
    task = asyncio.create_task(
        Worker(orchestrator, poll_seconds=settings.poll_seconds).run(), name="sagakit-worker"
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
