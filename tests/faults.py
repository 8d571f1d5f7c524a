"""Fault hooks for the process-level tests, installed by ``tests/launch.py`` (never in production).

- ``SAGAKIT_CRASH_AT=point:step[#n]``: the checkout service (or worker) kills itself with
  SIGKILL the n-th time its orchestrator reaches ``point`` for ``step``. The points:
  ``before_do``, ``after_do``, ``before_wait``, ``after_wait``, ``after_signal``,
  ``before_compensate``, ``after_compensate``.
- ``SAGAKIT_PARTICIPANT_SLOW_SECONDS``: a participant service sleeps this long before the
  first command of each (path, key), so that the caller times out and retries meanwhile.
- ``SAGAKIT_PARTICIPANT_DROP_REPLIES=true``: a participant service applies the first command
  of each (path, key), then breaks its answer off (the reply is lost after the effect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sagakit.orchestrator import Probe
from sagakit.settings import Settings

logger = logging.getLogger("sagakit.tests")


def crash_probe(spec: str) -> Probe:
    """A probe that kills this process with SIGKILL at ``point:step[#n]``."""
    target, _, nth = spec.partition("#")
    remaining = [int(nth) if nth else 1]

    def probe(point: str, step: str) -> None:
        if f"{point}:{step}" == target:
            remaining[0] -= 1
            if remaining[0] == 0:
                logger.warning("SAGAKIT_CRASH_AT=%s reached: killing this process", spec)
                os.kill(os.getpid(), signal.SIGKILL)

    return probe


class CommandFaults:
    """ASGI middleware: the faults above, on the first command of each (path, key)."""

    def __init__(self, app: ASGIApp, *, slow_seconds: float, drop_replies: bool) -> None:
        self.app = app
        self.slow_seconds = slow_seconds
        self.drop_replies = drop_replies
        self.seen: set[tuple[str, str]] = set()

    def _first(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        key = headers.get(b"idempotency-key")
        if scope["type"] != "http" or key is None:
            return False
        command = (str(scope["path"]), key.decode())
        if command in self.seen:
            return False
        self.seen.add(command)
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._first(scope):
            await self.app(scope, receive, send)
            return
        if self.slow_seconds > 0:
            await asyncio.sleep(self.slow_seconds)
        if not self.drop_replies:
            await self.app(scope, receive, send)
            return

        async def swallow(message: Message) -> None:
            return None

        await self.app(scope, receive, swallow)
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"64")],
        }
        await send(start)
        raise ConnectionAbortedError("test hook: the reply is dropped after the effect")


def install() -> None:
    """Wrap the composition root's entry points with the faults the environment asks for."""
    import sagakit.api.participants as participants
    import sagakit.service as service

    crash_at = os.environ.get("SAGAKIT_CRASH_AT")
    if crash_at:
        running = service.running_service

        @contextlib.asynccontextmanager
        async def crashing(settings: Settings, **options: Any) -> AsyncIterator[Any]:
            async with running(settings, probe=crash_probe(crash_at), **options) as opened:
                yield opened

        service.running_service = crashing
    slow = float(os.environ.get("SAGAKIT_PARTICIPANT_SLOW_SECONDS") or 0)
    drop = os.environ.get("SAGAKIT_PARTICIPANT_DROP_REPLIES", "").lower() in ("1", "true", "yes")
    if slow > 0 or drop:
        create: Callable[..., Any] = participants.create_participant_app

        def faulty(*args: Any, **options: Any) -> Any:
            app = create(*args, **options)
            app.add_middleware(CommandFaults, slow_seconds=slow, drop_replies=drop)
            return app

        participants.create_participant_app = faulty
