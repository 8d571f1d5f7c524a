"""Refuse request bodies over a size limit with 413, before the application reads them."""

from __future__ import annotations

from typing import Final

import orjson
from starlette.types import Message, Receive, Scope, Send

MAX_BODY_BYTES: Final = 1024 * 1024


class ClientGone(Exception):
    """The client went away while its streamed body was read."""


async def bounded_receive(scope: Scope, receive: Receive, limit: int) -> Receive | None:
    """``receive`` for a request whose body is within ``limit``; ``None`` when it is not.

    ``Content-Length`` decides when it is given (the server delivers exactly that many
    bytes). A streamed body of unknown length is read whole (up to the limit) first, so that
    a route which never reads its body cannot act on an oversized one; the receive returned
    then replays it; :class:`ClientGone` when the client left before it ended.
    """
    length: bytes | None = None
    streamed = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            streamed = True
    if length is not None:
        return receive if length.isdigit() and int(length) <= limit else None
    if not streamed:
        return receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

    return replay


async def send_json(send: Send, status: int, body: object) -> None:
    """Answer ``body`` as JSON with ``status``."""
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", str(len(data)).encode()),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def refuse(send: Send, limit: int) -> None:
    """The 413 answer to a body over ``limit`` bytes."""
    await send_json(send, 413, {"error": f"request body exceeds {limit} bytes"})
