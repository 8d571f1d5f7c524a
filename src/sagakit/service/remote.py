"""The checkout's participants, in this process or reached through a transport.

The saga is the same either way (``checkout``: payment, inventory, shipping, with the same
results); what changes is how each step reaches its participant: its shop's tables here,
an HTTP request (``transports.http``), or a RabbitMQ message through the outbox
(``transports.amqp``). The commands themselves are the shop's (``shop.commands``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import httpx

from sagakit.retry import DEFAULT_COMPENSATION_RETRY, RetryPolicy
from sagakit.saga import Saga, Step
from sagakit.settings import Settings
from sagakit.shop.base import ShopStore
from sagakit.shop.commands import BODIES, PLAN
from sagakit.shop.local_participants import CHECKOUT, checkout_saga
from sagakit.store.base import MessageStore
from sagakit.transports.http import HttpStep

if TYPE_CHECKING:
    from sagakit.transports.amqp.relay import AmqpRelay


@dataclass(slots=True)
class Participants:
    """The checkout saga over the chosen transport, and the shop its service reads."""

    saga: Saga
    shop: ShopStore
    #: The AMQP side (relay, reply consumer), told the orchestrator's owner id once known.
    amqp: AmqpRelay | None = None


@contextlib.asynccontextmanager
async def opened_participants(
    settings: Settings, store: MessageStore, shop: ShopStore
) -> AsyncIterator[Participants]:
    """The participants ``settings.participants`` names, open while the context is."""
    retry = compensation_retry(settings)
    if settings.participants == "local":
        local = checkout_saga(shop, compensation_retry=retry, local=settings.local_steps)
        yield Participants(local, shop)
        return
    # Over HTTP, or AMQP: users and items are read and created over the participants' HTTP
    # APIs, which hold the real balances and stock.
    async with http_client(settings) as client:
        catalog = participant_catalog(shop, client, settings)
        if settings.participants == "http":
            yield Participants(with_retry(http_saga(client, settings), retry), catalog)
            return
        from sagakit.transports.amqp.relay import AmqpRelay

        relay = AmqpRelay(settings, store, [name for name, _, _ in PLAN])
        await relay.start()
        try:
            yield Participants(with_retry(amqp_saga(relay), retry), catalog, relay)
        finally:
            await relay.close()


def compensation_retry(settings: Settings) -> RetryPolicy | None:
    """The checkout's compensation policy when the settings change its number of tries."""
    if not settings.compensation_attempts:
        return None
    return replace(DEFAULT_COMPENSATION_RETRY, max_attempts=settings.compensation_attempts)


def with_retry(saga: Saga, retry: RetryPolicy | None) -> Saga:
    """``saga`` with its steps' compensation policy replaced by ``retry`` (if given)."""
    if retry is not None:
        for step in saga.steps:
            step.compensation_retry = retry
    return saga


@contextlib.asynccontextmanager
async def http_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """One client for every call to the participants, closed with the context."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    timeout = settings.participant_timeout_seconds
    async with httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport) as client:
        yield client


def http_saga(client: httpx.AsyncClient, settings: Settings) -> Saga:
    """The ``checkout`` saga over HTTP: the same name, steps and results as in-process."""
    bases = {
        "payment": settings.payment_url,
        "inventory": settings.inventory_url,
        "shipping": settings.shipping_url,
    }
    steps: list[Step] = []
    for name, action, undo in PLAN:
        base = f"{bases[name].rstrip('/')}/{name}"
        step = HttpStep(
            client,
            name=name,
            action_url=f"{base}/{action}",
            compensation_url=f"{base}/{undo}",
            body=BODIES[name],
            timeout=settings.participant_timeout_seconds,
        )
        steps.append(step)
    return Saga(CHECKOUT, steps)


def amqp_saga(relay: AmqpRelay) -> Saga:
    """The ``checkout`` saga over AMQP: the same name, steps and results as in-process."""
    steps: list[Step] = [
        relay.step(name, action=action, undo=undo, body=BODIES[name]) for name, action, undo in PLAN
    ]
    return Saga(CHECKOUT, steps)


def participant_catalog(
    local: ShopStore, client: httpx.AsyncClient, settings: Settings
) -> ShopStore:
    """``local`` with users and items read from (and created at) the participants."""
    from sagakit.service.catalog import ParticipantCatalog

    return ParticipantCatalog(
        local, client, payment_url=settings.payment_url, inventory_url=settings.inventory_url
    )
