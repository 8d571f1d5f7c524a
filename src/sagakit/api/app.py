"""The FastAPI application: routers, error handlers, limits, and the service's lifetime."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from sagakit.api import catalog, checkout, health
from sagakit.api.errors import install_error_handlers
from sagakit.api.observe import Observe
from sagakit.api.operator import operator_router
from sagakit.api.responses import JSONResponse
from sagakit.api.sessions import Sessions
from sagakit.api.throttle import SignInThrottle
from sagakit.settings import Settings
from sagakit.shop.checkout import CheckoutService
from sagakit.store.sessions import open_sessions

DESCRIPTION = """
A durable checkout: `POST /checkout/{order_id}` runs the `checkout` saga
(payment → inventory → shipping) and compensates the steps done when one refuses.

Every error answers JSON with an `error` message. The operator's routes (`/sagas...`) need
`Authorization: Bearer <token>`: a token of `SAGAKIT_VIEWER_TOKENS` may read them, and
`SAGAKIT_ADMIN_TOKEN` may do everything (the actions, `POST /users`, `POST /items`).
"""


#: Opens the checkout service for the app's lifetime (``sagakit.service.running_service``).
RunningService = Callable[[Settings], AbstractAsyncContextManager[CheckoutService]]


def create_app(settings: Settings, running: RunningService) -> FastAPI:
    """The checkout service's app; its lifespan runs ``running(settings)`` (store, worker)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(settings) as service:
            app.state.service = service
            app.state.sessions = Sessions(await open_sessions(service.store), settings)
            await app.state.sessions.prune()
            yield

    app = FastAPI(
        title="sagakit checkout",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=JSONResponse,
        # No redirect to add or drop a trailing slash: it would be built from the Host header.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.sign_in_throttle = SignInThrottle()
    install_error_handlers(app)
    app.add_middleware(Observe, hot=[checkout.HOT])
    for module in (checkout, catalog, health):
        app.include_router(module.router)
    app.include_router(operator_router())  # /sagas and the dashboard, as any app mounts them
    return app
