"""The dashboard: server-rendered pages over the saga store, signed in with the admin token.

Signing in sets an HttpOnly, SameSite=Strict cookie holding an HMAC of the token (never the
token itself). Every action checks the cookie and that the request comes from this origin.
"""

from __future__ import annotations

import hashlib
import hmac
from html import escape
from typing import Annotated, Final
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sagakit.api.deps import ADMIN_COOKIE, AppSettings, SagaId, Service, token_matches
from sagakit.api.sagas import iso
from sagakit.records import SagaInstance, SagaStatus
from sagakit.settings import Settings

router = APIRouter(prefix="/dashboard", include_in_schema=False)

STYLE: Final = """
body{font-family:system-ui,sans-serif;margin:0;padding:1rem;max-width:72rem;color:#222}
h1{font-size:1.4rem}a{color:#0650b4}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #ddd;font-size:.9rem}
.status{font-weight:600}.completed{color:#17803d}.compensated{color:#9a6700}
.failed{color:#c62828}.running,.compensating{color:#0650b4}
.counts span{margin-right:1rem}.scroll{overflow-x:auto}
form.inline{display:inline}button{padding:.4rem .8rem;font-size:1rem}
input{padding:.4rem;font-size:1rem;max-width:100%}
@media (max-width:40rem){td:nth-child(n+5),th:nth-child(n+5){display:none}}
"""


def _cookie_value(settings: Settings) -> str:
    key = (settings.admin_token or "").encode()
    return hmac.new(key, b"sagakit-dashboard", hashlib.sha256).hexdigest()


def _signed_in(request: Request, settings: Settings) -> bool:
    presented = request.cookies.get(ADMIN_COOKIE)
    return (
        bool(settings.admin_token)
        and presented is not None
        and (hmac.compare_digest(presented, _cookie_value(settings)))
    )


def _same_origin(request: Request) -> bool:
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return False
    return urlsplit(source).netloc == request.headers.get("host")


def _page(title: str, body: str, *, refresh: bool = False, status: int = 200) -> HTMLResponse:
    meta = '<meta http-equiv="refresh" content="5">' if refresh else ""
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{escape(title)} · sagakit</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status)


def _sign_in_page(message: str = "", status: int = 200) -> HTMLResponse:
    note = f'<p class="failed">{escape(message)}</p>' if message else ""
    return _page(
        "Sign in",
        "<h1>sagakit dashboard</h1>"
        f"{note}<form method=post action=/dashboard/login>"
        "<label>Admin token <input type=password name=token autocomplete=current-password "
        "required></label> <button type=submit>Sign in</button></form>",
        status=status,
    )


def _status(status: SagaStatus) -> str:
    return f'<span class="status {status.value}">{status.value}</span>'


@router.get("", response_class=HTMLResponse)
async def saga_list(
    request: Request,
    service: Service,
    settings: AppSettings,
    status: SagaStatus | None = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> Response:
    """The saga list with counts per status; a sign-in form when not signed in."""
    if not _signed_in(request, settings):
        return _sign_in_page()
    counts = await service.store.count_by_status()
    page = await service.store.list_sagas(status=status, limit=50, cursor=cursor)
    links = " ".join(
        f'<span><a href="/dashboard?status={s.value}">{s.value}</a>: {counts[s]}</span>'
        for s in SagaStatus
    )
    rows = "".join(_row(s) for s in page.sagas)
    more = (
        f'<p><a href="/dashboard?cursor={page.next_cursor}'
        f'{"&status=" + status.value if status else ""}">Older</a></p>'
        if page.next_cursor
        else ""
    )
    body = (
        '<h1>Sagas</h1><p class="counts"><span><a href="/dashboard">all</a></span>'
        f"{links}</p><div class=scroll><table><tr><th>saga</th><th>order</th><th>status</th>"
        f"<th>failed step</th><th>error</th><th>updated</th></tr>{rows}</table></div>{more}"
        "<form method=post action=/dashboard/logout><button type=submit>Sign out</button></form>"
    )
    return _page("Sagas", body, refresh=True)


def _row(saga: SagaInstance) -> str:
    return (
        f'<tr><td><a href="/dashboard/sagas/{saga.saga_id}">{saga.saga_id[:12]}</a></td>'
        f"<td>{escape(saga.business_key or '')}</td><td>{_status(saga.status)}</td>"
        f"<td>{escape(saga.failed_step or '')}</td><td>{escape(saga.error or '')}</td>"
        f"<td>{iso(saga.updated_at)[:19]}</td></tr>"
    )


@router.get("/sagas/{saga_id}", response_class=HTMLResponse)
async def saga_page(
    saga_id: SagaId, request: Request, service: Service, settings: AppSettings
) -> Response:
    """One saga: its steps, its timeline of events, and the retry button when failed."""
    if not _signed_in(request, settings):
        return _sign_in_page()
    saga = await service.store.get(saga_id)
    if saga is None:
        return _page("Not found", f"<h1>No saga {escape(saga_id)}</h1>", status=404)
    events = await service.store.events(saga_id)
    steps = "".join(
        f"<tr><td>{escape(s.name)}</td><td class='status {s.status.value}'>{s.status.value}</td>"
        f"<td>{s.attempts}</td><td>{s.compensation_attempts}</td>"
        f"<td>{escape(s.error or '')}</td></tr>"
        for s in saga.steps
    )
    timeline = "".join(
        f"<tr><td>{iso(e.at)[11:23]}</td><td>{escape(e.type)}</td><td>{escape(e.step or '')}</td>"
        f"<td>{e.attempt or ''}</td><td>{escape(e.detail or '')}</td></tr>"
        for e in events
    )
    retry = (
        f'<form method=post action="/dashboard/sagas/{saga.saga_id}/retry">'
        "<button type=submit>Retry compensation</button></form>"
        if saga.status is SagaStatus.FAILED
        else ""
    )
    body = (
        f'<p><a href="/dashboard">← all sagas</a></p><h1>Saga {escape(saga.saga_id)}</h1>'
        f"<p>{escape(saga.name)} for {escape(saga.business_key or '-')}: {_status(saga.status)}"
        f"{' — ' + escape(saga.error) if saga.error else ''}</p>{retry}"
        "<h2>Steps</h2><div class=scroll><table><tr><th>step</th><th>status</th><th>attempts</th>"
        f"<th>compensations</th><th>error</th></tr>{steps}</table></div>"
        "<h2>Timeline</h2><div class=scroll><table><tr><th>at</th><th>event</th><th>step</th>"
        f"<th>attempt</th><th>detail</th></tr>{timeline}</table></div>"
    )
    return _page(f"Saga {saga.saga_id}", body, refresh=saga.status.is_active)


@router.post("/login")
async def login(request: Request, settings: AppSettings) -> Response:
    """Check the admin token from the form and set the session cookie."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0]
    if not token_matches(settings, token):
        return _sign_in_page("That is not the admin token.", status=401)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        ADMIN_COOKIE, _cookie_value(settings), httponly=True, samesite="strict", path="/"
    )
    return response


@router.post("/logout")
async def logout() -> Response:
    """Forget the session cookie."""
    response = RedirectResponse("/dashboard", status_code=303)
    response.delete_cookie(ADMIN_COOKIE, path="/")
    return response


@router.post("/sagas/{saga_id}/retry")
async def retry(
    saga_id: SagaId, request: Request, service: Service, settings: AppSettings
) -> Response:
    """Resume a failed saga's compensation, for a signed-in operator on this origin."""
    if not _signed_in(request, settings):
        raise HTTPException(status_code=401, detail="sign in first")
    if not _same_origin(request):
        raise HTTPException(status_code=403, detail="cross-origin request refused")
    await service.orchestrator.retry(saga_id, actor="dashboard")
    return RedirectResponse(f"/dashboard/sagas/{saga_id}", status_code=303)
