"""``POST /checkout/{order_id}``: the original demo's route, made durable.

The route is declared here for the application (and its OpenAPI description), and
:data:`HOT` answers the same requests before the application's routing does: the checkout
is the request a shop serves most, and FastAPI's routing, validation and dependency
resolution cost more than the rest of the HTTP layer together (``python -m bench.asgi``).
:func:`claim` takes only requests whose answer it gives exactly as the route would (the
path's id valid, ``wait`` absent or spelled ``true``/``false``/``1``/``0``); the route answers
everything else (a 422 for a bad id or ``wait``, a 405 for another method).
"""

from __future__ import annotations

import re
from typing import Final

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Scope, Send

from sagakit.api.deps import OrderId
from sagakit.api.errors import domain_answer, unexpected_answer
from sagakit.api.limits import send_json
from sagakit.api.observe import Answer, HotRoute
from sagakit.api.responses import JSONResponse
from sagakit.api.schemas import (
    CheckoutBlockedOut,
    CheckoutCompensated,
    CheckoutCompleted,
    CheckoutPending,
    Error,
)
from sagakit.errors import SagakitError
from sagakit.records import SagaStatus
from sagakit.settings import Settings
from sagakit.shop.checkout import CheckoutOutcome, CheckoutService

router = APIRouter(tags=["checkout"])

TEMPLATE: Final = "/checkout/{order_id}"


@router.post(
    TEMPLATE,
    response_model=CheckoutCompleted,
    responses={
        202: {"model": CheckoutPending, "description": "still running"},
        400: {"model": CheckoutCompensated, "description": "a step refused; compensated"},
        404: {"model": Error, "description": "unknown order"},
        409: {"model": CheckoutBlockedOut, "description": "last saga failed; operator needed"},
        422: {"model": Error, "description": "invalid order id"},
    },
)
async def checkout(order_id: OrderId, request: Request, wait: bool = True) -> Response:
    """Check the order out through the ``checkout`` saga (payment, inventory, shipping).

    Every checkout of the same order joins that order's one saga, so an order is never
    charged twice. Waits up to ``SAGAKIT_CHECKOUT_WAIT_SECONDS`` for the outcome, then
    answers 202; ``?wait=false`` answers at once: 202 while the saga runs on, or its
    outcome if it has already ended (an in-process checkout runs whole, as one
    transaction, before it is acknowledged).
    """
    state = request.app.state
    outcome = await _check_out(state.service, state.settings, order_id, wait)
    status, body = answer(outcome)
    return JSONResponse(body, status_code=status)


async def _check_out(
    service: CheckoutService, settings: Settings, order_id: str, wait: bool
) -> CheckoutOutcome:
    return await service.checkout(
        order_id, wait_seconds=settings.checkout_wait_seconds if wait else 0.0
    )


def answer(outcome: CheckoutOutcome) -> tuple[int, dict[str, object]]:
    """The status and body that tell where the order's saga stands."""
    saga = outcome.saga
    ids: dict[str, object] = {"order_id": outcome.order_id, "saga_id": saga.saga_id}
    if saga.status is SagaStatus.COMPLETED:
        return 200, {**ids, "status": "completed", "message": "Order Completed"}
    if saga.status is SagaStatus.COMPENSATED:
        return 400, {
            **ids,
            "status": "compensated",
            "error": saga.error,
            "failed_step": saga.failed_step,
        }
    if saga.status is SagaStatus.FAILED:
        return 409, {**ids, "status": "failed", "error": saga.error}
    return 202, {**ids, "status": saga.status.value}


_PATH: Final = re.compile(r"/checkout/([A-Za-z0-9_-]{1,64})")
#: The query strings :func:`claim` takes, and the ``wait`` each says.
_WAIT: Final = {
    b"": True,
    b"wait=true": True,
    b"wait=1": True,
    b"wait=false": False,
    b"wait=0": False,
}


def claim(scope: Scope) -> Answer | None:
    """The answer to a checkout request the route would answer the same way; else ``None``."""
    if scope["method"] != "POST" or scope.get("root_path"):
        return None
    match = _PATH.fullmatch(scope["path"])
    wait = _WAIT.get(scope["query_string"])
    app = scope.get("app")
    if match is None or wait is None or app is None:
        return None
    service: CheckoutService | None = getattr(app.state, "service", None)
    if service is None:  # not started (or already stopped): the application says so
        return None
    settings: Settings = app.state.settings
    order_id = match.group(1)

    async def respond(send: Send) -> None:
        try:
            status, body = answer(await _check_out(service, settings, order_id, wait))
        except SagakitError as exc:
            status, body = domain_answer(exc, "POST", scope["path"])
        except Exception:  # the application's last resort, as its error handler does
            status, body = unexpected_answer("POST", scope["path"])
        await send_json(send, status, body)

    return respond


HOT: Final[HotRoute] = (TEMPLATE, claim)
