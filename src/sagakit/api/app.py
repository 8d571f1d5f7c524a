"""The FastAPI application: routers, error handlers, limits, and the service's lifetime."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from sagakit.api import catalog, checkout, health
from sagakit.api.errors import install_error_handlers
from sagakit.api.limits import BodySizeLimit
from sagakit.api.operator import operator_router
from sagakit.api.request_id import RequestId
from sagakit.api.responses import JSONResponse
from sagakit.settings import Settings
from sagakit.shop.checkout import CheckoutService

DESCRIPTION = """
A durable checkout: `POST /checkout/{order_id}` runs the `checkout` saga
(payment → inventory → shipping) and compensates the steps done when one refuses.

Every error answers JSON with an `error` message. Admin routes need
`Authorization: Bearer <SAGAKIT_ADMIN_TOKEN>`.
"""


#: Opens the checkout service for the app's lifetime (``sagakit.service.running_service``).
RunningService = Callable[[Settings], AbstractAsyncContextManager[CheckoutService]]


def create_app(settings: Settings, running: RunningService) -> FastAPI:
    """The checkout service's app; its lifespan runs ``running(settings)`` (store, worker)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(settings) as service:
            app.state.service = service
            yield

    app = FastAPI(
        title="sagakit checkout",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(RequestId)  # added last, so outermost: a 413 carries an id too
    for module in (checkout, catalog, health):
        app.include_router(module.router)
    app.include_router(operator_router())  # /sagas and the dashboard, as any app mounts them
    return app
