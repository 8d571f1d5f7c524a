"""Exceptions to JSON answers: one table, and the handlers that use it.

No stack trace ever reaches a client: anything unexpected is logged and answered 500.
"""

from __future__ import annotations

import logging
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from sagakit.api.responses import JSONResponse
from sagakit.errors import (
    BusinessKeyConflict,
    InvalidTransition,
    SagakitError,
    SagaNotFound,
    StoreError,
    UnknownSaga,
)
from sagakit.shop.errors import AlreadyExists, CheckoutBlocked, InvalidOrder, NotFound
from sagakit.transports.http import ParticipantUnavailable

logger = logging.getLogger("sagakit.api")

#: The HTTP status of each domain error; the most specific class listed wins.
STATUS_OF: Final[dict[type[SagakitError], int]] = {
    NotFound: 404,
    SagaNotFound: 404,
    UnknownSaga: 404,
    AlreadyExists: 409,
    BusinessKeyConflict: 409,
    InvalidTransition: 409,
    InvalidOrder: 422,
    StoreError: 503,
    ParticipantUnavailable: 503,
}


def status_of(exc: SagakitError) -> int:
    """The status for ``exc``: its nearest class in :data:`STATUS_OF`, else 500."""
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 500


def domain_answer(exc: SagakitError, method: str, path: str) -> tuple[int, dict[str, object]]:
    """The status and JSON body that answer ``exc``, raised by ``method path``."""
    if isinstance(exc, CheckoutBlocked):
        body: dict[str, object] = {
            "order_id": exc.order_id,
            "saga_id": exc.saga_id,
            "status": "failed",
            "error": exc.message,
        }
        return 409, body
    status = status_of(exc)
    if status >= 500:
        logger.error("%s %s: %s", method, path, exc)
    return status, {"error": exc.message}


def unexpected_answer(method: str, path: str) -> tuple[int, dict[str, object]]:
    """Log the exception being handled; the 500 that answers it (never its details)."""
    logger.exception("%s %s failed", method, path)
    return 500, {"error": "internal server error"}


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SagakitError)
    status, body = domain_answer(exc, request.method, request.url.path)
    return JSONResponse(body, status_code=status)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", ""))}
        for err in exc.errors()
    ]
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"])
    return JSONResponse(
        {"error": f"invalid request: {where}: {first['msg']}", "detail": detail},
        status_code=422,
    )


#: What FastAPI says when the JSON parser raised something other than a decode error
#: (nesting too deep, an integer with too many digits, bad UTF-8 inside a string).
_UNPARSABLE_BODY: Final = "There was an error parsing the body"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        # The same answer as any other body that is not JSON: 422, as the contract says.
        return JSONResponse(
            {"error": "invalid request: the body is not valid JSON"}, status_code=422
        )
    return JSONResponse(
        {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    status, body = unexpected_answer(request.method, request.url.path)
    return JSONResponse(body, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error as JSON with an ``error`` message."""
    app.add_exception_handler(SagakitError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
