"""The HTTP server: a listening socket bound first, and connections one client cannot hoard.

``sagakit serve`` binds its port before anything else happens (a port in use fails the start
before the database is touched), then runs uvicorn with :class:`GuardedProtocol`, uvicorn's
own HTTP protocol with three limits added:

- a request's headers must arrive within ``header_timeout`` seconds of the connection (or of
  the previous answer on a kept-alive connection), however slowly they trickle in;
- its body must arrive within ``body_timeout`` seconds of its headers;
- at most ``max_connections`` connections are open: past that, the connection idle for the
  longest (waiting for a request, not being answered) is closed to make room, so idle
  sockets cannot use up the process's open files and lock everyone else out.

Idle kept-alive connections are closed after ``keep_alive`` seconds (uvicorn's own timer).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from dataclasses import dataclass
from typing import Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sagakit.settings import Settings

logger = logging.getLogger("sagakit.server")

#: Open files kept back from connections: the database, log files, the listening socket.
RESERVED_FILES: Final = 128


def default_max_connections() -> int:
    """The open-files limit of this process, less what the rest of the service needs."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, soft - RESERVED_FILES)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may take."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive: float = 5.0
    #: ``None``: :func:`default_max_connections`.
    max_connections: int | None = None

    @property
    def connections(self) -> int:
        """The connection cap in force."""
        return self.max_connections or default_max_connections()


_limits = Limits()


def limits_of(settings: Settings) -> Limits:
    """The connection limits the settings ask for."""
    return Limits(
        header_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
        keep_alive=settings.keep_alive_seconds,
        max_connections=settings.max_connections,
    )


def configure(limits: Limits) -> None:
    """Set the limits every :class:`GuardedProtocol` of this process applies."""
    global _limits
    _limits = limits


def current_limits() -> Limits:
    """The limits in force in this process."""
    return _limits


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines and a connection cap."""

    idle_since: float | None = None
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._make_room()
        self._waiting_for_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear_deadline()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self.idle_since = None
        self._arm(_limits.body_timeout, "request body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._clear_deadline()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._waiting_for_request()

    # -- the limits ------------------------------------------------------------------------

    def _waiting_for_request(self) -> None:
        self.idle_since = time.monotonic()
        self._arm(_limits.header_timeout, "request headers")

    def _arm(self, seconds: float, what: str) -> None:
        self._clear_deadline()
        self._deadline = self.loop.call_later(seconds, self._too_slow, what)

    def _clear_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self, what: str) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            logger.info(
                "closed a connection: %s not received in time",
                what,
                extra={"client": self.client[0] if self.client else "unknown"},
            )
            self.transport.close()

    def _make_room(self) -> None:
        """Close the longest-idle connection while more than the cap are open."""
        cap = _limits.connections
        while len(self.connections) > cap:
            idle = [
                c
                for c in self.connections
                if isinstance(c, GuardedProtocol) and c.idle_since is not None and c is not self
            ]
            if not idle:
                self.transport.close()  # every other connection is busy: refuse this one
                return
            oldest = min(idle, key=lambda c: c.idle_since or 0.0)
            oldest.idle_since = None
            oldest.transport.close()
            # Closing is asynchronous: the set shrinks when connection_lost runs.
            self.connections.discard(oldest)


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (raises ``OSError``: address in use, not ours)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
