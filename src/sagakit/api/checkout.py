"""``POST /checkout/{order_id}``: the original demo's route, made durable."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from sagakit.api.deps import OrderId
from sagakit.api.responses import JSONResponse
from sagakit.api.schemas import (
    CheckoutBlockedOut,
    CheckoutCompensated,
    CheckoutCompleted,
    CheckoutPending,
    Error,
)
from sagakit.records import SagaStatus
from sagakit.settings import Settings
from sagakit.shop.checkout import CheckoutService

router = APIRouter(tags=["checkout"])


@router.post(
    "/checkout/{order_id}",
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
    # The hot route: the service and settings straight from app.state (what the ``Service``
    # and ``AppSettings`` dependencies return), without two dependency resolutions a request.
    state = request.app.state
    service: CheckoutService = state.service
    settings: Settings = state.settings
    outcome = await service.checkout(
        order_id, wait_seconds=settings.checkout_wait_seconds if wait else 0.0
    )
    saga = outcome.saga
    ids = {"order_id": order_id, "saga_id": saga.saga_id}
    if saga.status is SagaStatus.COMPLETED:
        return JSONResponse({**ids, "status": "completed", "message": "Order Completed"})
    if saga.status is SagaStatus.COMPENSATED:
        body = {
            **ids,
            "status": "compensated",
            "error": saga.error,
            "failed_step": saga.failed_step,
        }
        return JSONResponse(body, status_code=400)
    if saga.status is SagaStatus.FAILED:
        return JSONResponse({**ids, "status": "failed", "error": saga.error}, status_code=409)
    return JSONResponse({**ids, "status": saga.status.value}, status_code=202)
