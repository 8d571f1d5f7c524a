"""What the operator's routes (``/sagas`` and the dashboard) work on, in any app.

The checkout service keeps its :class:`~sagakit.shop.service.CheckoutService` in
``app.state.service``; an application that mounts ``sagakit.fastapi.operator_router`` has
the orchestrator ``sagas_lifespan`` runs. Both have a saga store and an orchestrator, which
is all these routes use. The routes answer sagakit's errors themselves
(:class:`DomainErrors`), so that they need no handler of the app they are mounted in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Final, Protocol

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from sagakit.errors import SagakitError
from sagakit.orchestrator import SagaOrchestrator
from sagakit.store.base import SagaStore

logger = logging.getLogger("sagakit.api")

#: Where ``sagakit.fastapi.sagas_lifespan`` keeps the app's orchestrator:
#: ``app.state.sagakit_orchestrator``.
STATE_ATTRIBUTE: Final = "sagakit_orchestrator"
#: Where the operator router puts, per request, what the routes work on and their settings.
OPERATED_STATE: Final = "sagakit_operated"
SETTINGS_STATE: Final = "sagakit_settings"


class Operated(Protocol):
    """A saga store and the orchestrator that drives its sagas."""

    store: SagaStore
    orchestrator: SagaOrchestrator


class OrchestratorSagas:
    """An application's orchestrator seen as :class:`Operated`."""

    def __init__(self, orchestrator: SagaOrchestrator) -> None:
        self.orchestrator = orchestrator
        self.store = orchestrator.store


async def get_operated(request: Request) -> Operated:
    """What the operator router bound for this request, else the checkout service."""
    operated: Operated | None = getattr(request.state, OPERATED_STATE, None)
    if operated is None:
        operated = request.app.state.service
    return operated


Operations = Annotated[Operated, Depends(get_operated)]


class DomainErrors(APIRoute):
    """A route that answers a :class:`~sagakit.errors.SagakitError` as JSON itself."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SagakitError as exc:
                from sagakit.api.errors import status_of
                from sagakit.api.responses import JSONResponse

                status = status_of(exc)
                if status >= 500:
                    logger.error("%s %s: %s", request.method, request.url.path, exc)
                return JSONResponse({"error": exc.message}, status_code=status)

        return handle
