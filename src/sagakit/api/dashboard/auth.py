"""Who may use the dashboard: a session cookie, and a same-origin check on every action.

Signing in sets an HttpOnly, SameSite=Strict cookie holding an HMAC of the admin token
(never the token itself), so changing the token signs everyone out. Every action (a POST
that changes a saga) must also come from this origin: its ``Origin`` (or, failing that,
``Referer``) must name the host the request was sent to.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from sagakit.api.deps import ADMIN_COOKIE
from sagakit.settings import Settings


def cookie_value(settings: Settings) -> str:
    """The session cookie's value: an HMAC of a fixed label keyed by the admin token."""
    key = (settings.admin_token or "").encode()
    return hmac.new(key, b"sagakit-dashboard", hashlib.sha256).hexdigest()


def signed_in(request: Request, settings: Settings) -> bool:
    """Whether the request carries a valid session (never, without an admin token)."""
    presented = request.cookies.get(ADMIN_COOKIE)
    return (
        bool(settings.admin_token)
        and presented is not None
        and hmac.compare_digest(presented, cookie_value(settings))
    )


def same_origin(request: Request) -> bool:
    """Whether the request names this host as its origin (``Origin``, else ``Referer``)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return False
    return urlsplit(source).netloc == request.headers.get("host")


def check_operator(request: Request, settings: Settings) -> None:
    """Refuse an action with 401 without a session, and 403 from another origin."""
    if not signed_in(request, settings):
        raise HTTPException(status_code=401, detail="sign in first")
    if not same_origin(request):
        raise HTTPException(status_code=403, detail="cross-origin request refused")
