"""The operator's surface of any FastAPI app: ``/sagas`` and the dashboard, as one router.

``sagakit.fastapi.operator_router`` is this; the checkout service mounts it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import State

from sagakit.api import dashboard, sagas
from sagakit.api.operated import (
    OPERATED_STATE,
    SETTINGS_STATE,
    STATE_ATTRIBUTE,
    OrchestratorSagas,
)
from sagakit.api.sessions import Sessions
from sagakit.api.throttle import SignInThrottle
from sagakit.orchestrator import SagaOrchestrator
from sagakit.settings import Settings
from sagakit.store.sessions import open_sessions


def operator_router(
    *, admin_token: str | None = None, viewer_tokens: Iterable[str] | str = ()
) -> APIRouter:
    """The operator's surface for the sagas of this app: the ``/sagas`` API and the dashboard.

    ``app.include_router(operator_router(admin_token=..., viewer_tokens=[...]),
    prefix="/ops")`` serves ``/ops/sagas...`` (list, show, retry, cancel, resolve, signal)
    and ``/ops/dashboard`` for the orchestrator ``sagakit.fastapi.sagas_lifespan`` runs in
    the app, with the checkout service's rules: reading needs the admin token or a viewer
    token (``Authorization: Bearer``, or the dashboard's sign-in), acting needs the admin
    token, and the routes answer errors as JSON themselves. ``viewer_tokens`` is a list, or
    one comma-separated string as ``SAGAKIT_VIEWER_TOKENS`` is. Given neither token, the
    app's own settings and service are used (the checkout service mounts it so).
    """
    viewers = viewer_tokens if isinstance(viewer_tokens, str) else ",".join(viewer_tokens)
    settings = (
        None
        if admin_token is None and not viewers
        else Settings.model_construct(admin_token=admin_token, viewer_tokens=viewers)
    )
    equipping = asyncio.Lock()

    async def bind(request: Request) -> None:
        orchestrator = getattr(request.app.state, STATE_ATTRIBUTE, None)
        if isinstance(orchestrator, SagaOrchestrator):
            setattr(request.state, OPERATED_STATE, OrchestratorSagas(orchestrator))
        if settings is not None:
            setattr(request.state, SETTINGS_STATE, settings)
            async with equipping:
                await _equip(request.app.state, settings, orchestrator)

    router = APIRouter(dependencies=[Depends(bind)])
    router.include_router(sagas.router)
    router.include_router(dashboard.router)
    return router


async def _equip(state: State, settings: Settings, orchestrator: object) -> None:
    """Give an app that is not the checkout service what the access rules read: its
    settings, a sign-in throttle, and sessions in its saga store's database (once)."""
    if not hasattr(state, "settings"):
        state.settings = settings
    if not hasattr(state, "sign_in_throttle"):
        state.sign_in_throttle = SignInThrottle()
    if not hasattr(state, "sessions") and isinstance(orchestrator, SagaOrchestrator):
        state.sessions = Sessions(await open_sessions(orchestrator.store), settings)
