"""Who may use the dashboard: a session (or a bearer token), and a same-origin check on actions.

Signing in with the admin token or a viewer token opens a server-side session (see
``sagakit.api.sessions``); its cookie is HttpOnly and SameSite=Strict. A viewer sees the
pages without their buttons. Every action (a POST that changes a saga) needs an admin, and,
when it comes with a cookie, must come from this origin: its ``Origin`` (or, failing that,
``Referer``) must name the host the request was sent to.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from sagakit.api.access import Principal, forbidden, log_action, principal_of_token
from sagakit.api.sessions import sessions_of
from sagakit.settings import Settings


async def principal_of(request: Request) -> Principal | None:
    """Who the request comes from: a bearer token first, else a session cookie."""
    settings: Settings = request.app.state.settings
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return principal_of_token(settings, token.strip())
    return await sessions_of(request).principal(request)


def same_origin(request: Request) -> bool:
    """Whether the request names this host as its origin (``Origin``, else ``Referer``)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return False
    return urlsplit(source).netloc == request.headers.get("host")


async def check_operator(request: Request, action: str, saga_id: str) -> Principal:
    """The admin acting, logged; 401 without one, 403 for a viewer or from another origin."""
    principal = await principal_of(request)
    if principal is None:
        raise HTTPException(status_code=401, detail="sign in first")
    if not principal.is_admin:
        raise forbidden()
    if principal.actor.startswith("dashboard:") and not same_origin(request):
        raise HTTPException(status_code=403, detail="cross-origin request refused")
    log_action(request, principal, action, saga_id)
    return principal
