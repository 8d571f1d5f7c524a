"""Sagas in an existing FastAPI app: one line in its lifespan, one parameter in a route.

::

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with sagas_lifespan(app, "sqlite:///./shop.db", [order_saga]):
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/orders/{order_id}/checkout")
    async def checkout(order_id: str, orchestrator: Orchestrator) -> dict[str, str]:
        handle = await orchestrator.start("order", {"order_id": order_id}, business_key=order_id)
        return {"status": (await handle.result(timeout=10)).status}
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Annotated

from sagakit.extras import missing_extra

try:
    from fastapi import Depends, Request
    from starlette.applications import Starlette
except ModuleNotFoundError as exc:
    missing_extra(exc, "sagakit.fastapi")

from sagakit.api.operated import STATE_ATTRIBUTE
from sagakit.api.operator import operator_router
from sagakit.orchestrator import DEFAULT_LEASE_SECONDS, Listener, SagaOrchestrator
from sagakit.saga import Saga

__all__ = [
    "STATE_ATTRIBUTE",
    "Orchestrator",
    "get_orchestrator",
    "operator_router",
    "sagas_lifespan",
]


@contextlib.asynccontextmanager
async def sagas_lifespan(
    app: Starlette,
    url: str,
    sagas: Iterable[Saga],
    *,
    poll_seconds: float = 1.0,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    grace: float = 5.0,
    listeners: Iterable[Listener] = (),
) -> AsyncIterator[SagaOrchestrator]:
    """Run sagas beside ``app`` for as long as the block lasts.

    :meth:`SagaOrchestrator.connect` (the store that ``url`` names, and a worker beside the
    app: lease renewal, and recovery of sagas whose process died, every ``poll_seconds``),
    with the orchestrator kept where :func:`get_orchestrator` finds it. On the way out it
    stops the worker, lets running sagas finish for up to ``grace`` seconds, hands the
    others back (another process takes them over at once) and closes the store.
    """
    async with SagaOrchestrator.connect(
        url,
        sagas,
        poll_seconds=poll_seconds,
        lease_seconds=lease_seconds,
        grace=grace,
        listeners=listeners,
    ) as orchestrator:
        setattr(app.state, STATE_ATTRIBUTE, orchestrator)
        try:
            yield orchestrator
        finally:
            delattr(app.state, STATE_ATTRIBUTE)


async def get_orchestrator(request: Request) -> SagaOrchestrator:
    """The orchestrator :func:`sagas_lifespan` runs for this app (a FastAPI dependency).

    Raises ``RuntimeError`` when no ``sagas_lifespan`` is running for the app.
    """
    orchestrator = getattr(request.app.state, STATE_ATTRIBUTE, None)
    if not isinstance(orchestrator, SagaOrchestrator):
        raise RuntimeError("no saga orchestrator: enter sagas_lifespan(app, ...) in the lifespan")
    return orchestrator


#: A route parameter typed ``Orchestrator`` receives the app's :class:`SagaOrchestrator`.
Orchestrator = Annotated[SagaOrchestrator, Depends(get_orchestrator)]
