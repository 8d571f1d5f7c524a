"""Dashboard sessions: opened at sign-in, looked up on every page, ended at sign-out.

The cookie holds a random id of 256 bits and nothing else; the session (its role, its
expiry) is in the database, found by the id's digest. A session opened with a token stays
valid only while that token (and the admin token) are what this process was configured
with: changing ``SAGAKIT_ADMIN_TOKEN`` ends every session, at the next start of each process
(which also deletes them) and at once for a process already running with the new token.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Final

from fastapi import Request
from starlette.responses import Response

from sagakit.api.access import Principal, Role, viewer_tokens
from sagakit.settings import Settings
from sagakit.store.sessions import SessionRecord, SessionStore

COOKIE: Final = "sagakit_session"
#: Characters of the session id the history shows (``dashboard:<label>``).
LABEL: Final = 8
#: A cookie longer than any id this module makes is not looked up.
MAX_COOKIE: Final = 128


def id_digest(session_id: str) -> str:
    """The digest a session is stored under."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def credential(settings: Settings, token: str) -> str:
    """What ties a session to the admin token and to the token it was opened with."""
    tied = f"{settings.admin_token or ''}\0{token}"
    return hashlib.sha256(tied.encode("utf-8", "surrogatepass")).hexdigest()


class Sessions:
    """The sessions of one app, over a :class:`SessionStore`."""

    def __init__(
        self, store: SessionStore, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.settings = settings
        #: Seconds since the epoch; tests replace it to move time on.
        self.clock = clock
        tokens = [
            *([settings.admin_token] if settings.admin_token else []),
            *viewer_tokens(settings),
        ]
        self._valid = frozenset(credential(settings, t) for t in tokens)

    async def prune(self) -> int:
        """Delete expired sessions and those of tokens no longer configured."""
        return await self.store.prune(self._valid, now=self.clock())

    async def open(self, role: Role, token: str) -> tuple[str, SessionRecord]:
        """A new session for someone who signed in with ``token``: its id and its record."""
        session_id = secrets.token_urlsafe(32)
        at = self.clock()
        record = SessionRecord(
            id_digest=id_digest(session_id),
            role=role.value,
            label=session_id[:LABEL],
            credential=credential(self.settings, token),
            created_at=at,
            expires_at=at + self.settings.session_hours * 3600,
        )
        await self.store.add(record)
        return session_id, record

    async def find(self, request: Request) -> SessionRecord | None:
        """The live session the request's cookie names, or ``None``."""
        session_id = request.cookies.get(COOKIE)
        if not session_id or len(session_id) > MAX_COOKIE:
            return None
        record = await self.store.find(id_digest(session_id), now=self.clock())
        if record is None or record.credential not in self._valid:
            return None
        return record

    async def principal(self, request: Request) -> Principal | None:
        """Who the request's session belongs to, or ``None``."""
        record = await self.find(request)
        if record is None:
            return None
        return Principal(Role(record.role), f"dashboard:{record.label}")

    async def close(self, request: Request) -> SessionRecord | None:
        """End the request's session, if it has a live one; the session ended."""
        record = await self.find(request)
        if record is not None:
            await self.store.remove(record.id_digest)
        return record

    def set_cookie(self, request: Request, response: Response, session_id: str) -> None:
        """Hand the session's id to the browser: HttpOnly, SameSite=Strict, Secure on https."""
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=int(self.settings.session_hours * 3600),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )


def sessions_of(request: Request) -> Sessions:
    """The app's sessions."""
    sessions: Sessions = request.app.state.sessions
    return sessions
