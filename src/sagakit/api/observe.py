"""The one ASGI middleware around every HTTP request: id, body limit, hot route, log, metrics.

- **Request id**: taken from ``X-Request-ID`` or made, echoed in the answer, and bound to the
  structlog context for the request's lifetime, so every line logged while it is handled
  carries it, and so do the lines of a saga that the request started (its driving task
  inherits the context it was created in).
- **The last resort**: an exception no handler answered is logged and answered ``500`` with
  a JSON ``error`` that never shows its details (and with the request id, which the
  framework's own last resort, outside this middleware, could not add).
- **Body limit**: a body over ``limit`` bytes (by ``Content-Length``, or counted while a
  streamed one is read) is answered 413 before any route runs.
- **Hot routes**: a request a :data:`HotRoute` claims (the checkout) is answered by it
  directly, without the framework's routing, validation and dependency resolution; every
  request it does not claim goes to the application. A hot route claims only requests whose
  answer is the one the application's route would give.
- **Access log**: one ``sagakit.access`` line per request, with ``method``, ``route`` (the
  path template, ``/sagas/{saga_id}``, never the raw path), ``status``, ``duration_ms``
  and ``client``.
- **Metrics**: ``sagakit_http_requests_total`` by route, method and status, and
  ``sagakit_http_request_duration_seconds`` by route and method.
- **Trace context**: when traces are exported, a W3C ``traceparent`` (and ``tracestate``)
  the caller sent becomes the current context while the request is handled, so the saga a
  checkout starts is a child of the caller's span (OpenTelemetry is imported only then).

One middleware rather than several: each layer costs every request a call and a closure.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context

from sagakit.api.errors import unexpected_answer
from sagakit.api.limits import MAX_BODY_BYTES, ClientGone, bounded_receive, refuse, send_json
from sagakit.records import new_id

logger = logging.getLogger("sagakit.access")

HEADER: Final = b"x-request-id"
#: What a caller's id may look like: anything else (too long, spaces, newlines that would
#: forge log lines) is replaced by a fresh id.
VALID: Final = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

#: Answers a request it claimed, through the ``send`` given.
Answer = Callable[[Send], Awaitable[None]]
#: A hot route: its path template (for logs and metrics), and what claims a request.
HotRoute = tuple[str, Callable[[Scope], Answer | None]]


def _incoming(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == HEADER:
            text = value.decode("latin-1")
            return text if VALID.fullmatch(text) else None
    return None


TRACE_HEADERS: Final = (b"traceparent", b"tracestate")


def _continue_trace(scope: Scope) -> Token[Context] | None:
    """Attach the caller's trace context, when traces are on and it sent one; the token."""
    if not any(name == b"traceparent" for name, _ in scope["headers"]) or "app" not in scope:
        return None
    service = getattr(scope["app"].state, "service", None)
    if service is None or service.instruments.tracer is None:
        return None
    carrier = {
        name.decode(): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in TRACE_HEADERS
    }
    from opentelemetry import context, propagate

    return context.attach(propagate.extract(carrier))


def route_of(scope: Scope) -> str:
    """The matched route's path template, or ``unmatched`` (a 404 names no route)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class Observe:
    """ASGI middleware: give each request an id, bound its body, log it once answered, count it."""

    def __init__(
        self, app: ASGIApp, limit: int = MAX_BODY_BYTES, hot: Sequence[HotRoute] = ()
    ) -> None:
        self.app = app
        self.limit = limit
        self.hot = tuple(hot)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming(scope) or new_id()
        header = (HEADER, request_id.encode())
        status = 500
        answered = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        started = time.perf_counter()
        token = _continue_trace(scope)
        route: str | None = None
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                bounded = await bounded_receive(scope, receive, self.limit)
                if bounded is None:
                    await refuse(send_with_id, self.limit)
                    return
                for template, claim in self.hot:
                    answer = claim(scope)
                    if answer is not None:
                        route = template
                        await answer(send_with_id)
                        return
                await self.app(scope, bounded, send_with_id)
            except ClientGone:
                return  # nobody to answer; logged with no status given (500)
            except Exception:
                if answered:
                    raise  # too late for an answer: the server closes the connection
                # Answered here rather than by the framework's last resort, which sits
                # outside this middleware: the 500 names its request id too.
                await send_json(send_with_id, *unexpected_answer(scope["method"], scope["path"]))
            finally:
                self._observe(scope, route, status, time.perf_counter() - started)
                if token is not None:
                    from opentelemetry import context

                    context.detach(token)

    def _observe(self, scope: Scope, route: str | None, status: int, seconds: float) -> None:
        route, method = route or route_of(scope), scope["method"]
        client = scope.get("client")
        logger.info(
            "%s %s %d",
            method,
            route,
            status,
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "client": client[0] if client else "unknown",
            },
        )
        service = getattr(scope["app"].state, "service", None) if "app" in scope else None
        if service is not None:
            service.instruments.metrics.http(route, method, status, seconds)
