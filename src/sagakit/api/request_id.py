"""A request id for every HTTP request: taken from ``X-Request-ID`` or made, echoed, logged.

The id is bound to the structlog context for the request's lifetime, so every line logged
while it is handled carries it, and so do the lines of a saga that the request started
(its driving task inherits the context it was created in).
"""

from __future__ import annotations

import re
from typing import Final

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sagakit.records import new_id

HEADER: Final = "x-request-id"
#: What a caller's id may look like: anything else (too long, spaces, newlines that would
#: forge log lines) is replaced by a fresh id.
VALID: Final = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def _incoming(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == HEADER.encode():
            text = value.decode("latin-1")
            return text if VALID.fullmatch(text) else None
    return None


class RequestId:
    """ASGI middleware: give each request an id, bind it to the logs, echo it in the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming(scope) or new_id()
        header = (HEADER.encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)
