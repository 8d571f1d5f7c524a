"""The dashboard's routes: the list, a saga's page, sign-in, and the operator's actions.

Pages answer their ``#live`` region alone when the script asks for it with
``X-Dashboard-Fragment: live``. Every page forbids framing and inline code other than its
own (a CSP with a fresh nonce), and is never cached. Actions (retry, cancel, resolve) need
the session cookie and a same-origin request, and redirect back to the saga's page.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from html import escape
from typing import Annotated, Final
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sagakit.api.dashboard import views
from sagakit.api.dashboard.auth import check_operator, cookie_value, signed_in
from sagakit.api.deps import ADMIN_COOKIE, AppSettings, SagaId, token_matches
from sagakit.api.operated import DomainErrors, Operations
from sagakit.records import SagaStatus


async def _base(request: Request) -> None:
    """Tell the views where the dashboard is mounted (``/dashboard``, or under a prefix)."""
    path: str = request.scope["path"]
    route = request.scope.get("route")
    # The route as this module declared it ("/dashboard/sagas/{saga_id}"): what the request's
    # path ends with, once its parameters are filled in; what comes before is the prefix.
    declared = getattr(route, "path", "/dashboard")
    try:
        suffix = declared.format(**request.path_params)
    except (KeyError, IndexError, ValueError):
        suffix = declared
    prefix = path[: -len(suffix)] if path.endswith(suffix) else ""
    views.BASE.set(prefix + "/dashboard")


router = APIRouter(
    prefix="/dashboard",
    include_in_schema=False,
    route_class=DomainErrors,
    dependencies=[Depends(_base)],
)

FRAGMENT_HEADER: Final = "x-dashboard-fragment"
MAX_REASON: Final = 500
Text = Annotated[str, Query(max_length=64)]


def _csp(nonce: str) -> str:
    return (
        f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    )


def _html(
    title: str, body: str, *, signed: bool, status: int = 200, nonce: str | None = None
) -> HTMLResponse:
    nonce = nonce or secrets.token_urlsafe(16)
    return _headers(
        HTMLResponse(views.page(title, body, nonce=nonce, signed_in=signed), status), nonce
    )


def _fragment(html: str) -> HTMLResponse:
    return _headers(HTMLResponse(html), secrets.token_urlsafe(16))


def _headers(response: HTMLResponse, nonce: str) -> HTMLResponse:
    response.headers["content-security-policy"] = _csp(nonce)
    response.headers["cache-control"] = "no-store"
    response.headers["vary"] = "X-Dashboard-Fragment, Cookie"
    response.headers["referrer-policy"] = "same-origin"
    response.headers["x-content-type-options"] = "nosniff"
    return response


def _wants_fragment(request: Request) -> bool:
    return request.headers.get(FRAGMENT_HEADER) == "live"


def _signed_out(request: Request) -> Response:
    if _wants_fragment(request):
        return Response(status_code=401, headers={"cache-control": "no-store"})
    return _html("Sign in", views.sign_in(), signed=False)


def _instant(text: str) -> float | None:
    """An ``<input type=datetime-local>`` value (UTC) as epoch seconds; ``None`` if unreadable."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@router.get("", response_class=HTMLResponse)
async def saga_list(
    request: Request,
    service: Operations,
    settings: AppSettings,
    status: SagaStatus | None = None,
    name: Text = "",
    key: Text = "",
    created_after: Text = "",
    created_before: Text = "",
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> Response:
    """The sagas, newest first, with counts per status and filters; or the sign-in form."""
    if not signed_in(request, settings):
        return _signed_out(request)
    filters = views.ListFilters(
        status=status,
        name=name.strip(),
        key=key.strip(),
        created_after=created_after,
        created_before=created_before,
        cursor=cursor,
    )
    after, before = _instant(created_after), _instant(created_before)
    unreadable = [t for t, v in ((created_after, after), (created_before, before)) if t and not v]
    page = await service.store.list_sagas(
        status=status,
        name=filters.name or None,
        business_key=filters.key or None,
        created_after=after,
        created_before=before,
        limit=50,
        cursor=cursor,
    )
    counts = await service.store.count_by_status()
    if _wants_fragment(request):
        return _fragment(views.live_list(page, counts, filters))
    notice = f"Not a date and time, ignored: {', '.join(unreadable)}" if unreadable else ""
    body = views.saga_list(page, counts, filters, notice)
    return _html("Sagas", body, signed=True)


@router.get("/sagas/{saga_id}", response_class=HTMLResponse)
async def saga_page(
    saga_id: SagaId, request: Request, service: Operations, settings: AppSettings
) -> Response:
    """One saga: summary, actions, steps and the timeline of its attempts and compensations."""
    if not signed_in(request, settings):
        return _signed_out(request)
    saga = await service.store.get(saga_id)
    if saga is None:
        body = f"<h1>No saga {escape(saga_id)}</h1>"
        return _html("Not found", body, signed=True, status=404)
    events = await service.store.events(saga_id)
    if _wants_fragment(request):
        return _fragment(views.live_saga(saga, events))
    return _html(f"Saga {saga.saga_id}", views.saga_page(saga, events), signed=True)


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields, first value each (no multipart parser needed)."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items()}


@router.post("/login")
async def login(request: Request, settings: AppSettings) -> Response:
    """Check the admin token from the form and set the session cookie."""
    token = (await _form(request)).get("token", "")
    if not token_matches(settings, token):
        body = views.sign_in("That is not the admin token.")
        return _html("Sign in", body, signed=False, status=401)
    response = RedirectResponse(views.base(), status_code=303)
    response.set_cookie(
        ADMIN_COOKIE, cookie_value(settings), httponly=True, samesite="strict", path="/"
    )
    return response


@router.post("/logout")
async def logout() -> Response:
    """Forget the session cookie."""
    response = RedirectResponse(views.base(), status_code=303)
    response.delete_cookie(ADMIN_COOKIE, path="/")
    return response


def _back_to(saga_id: str) -> Response:
    return RedirectResponse(f"{views.base()}/sagas/{saga_id}", status_code=303)


@router.post("/sagas/{saga_id}/retry")
async def retry(
    saga_id: SagaId, request: Request, service: Operations, settings: AppSettings
) -> Response:
    """Resume a failed saga's compensation."""
    check_operator(request, settings)
    await service.orchestrator.retry(saga_id, actor="dashboard")
    return _back_to(saga_id)


@router.post("/sagas/{saga_id}/cancel")
async def cancel(
    saga_id: SagaId, request: Request, service: Operations, settings: AppSettings
) -> Response:
    """Ask a running saga to stop and compensate what it did."""
    check_operator(request, settings)
    await service.orchestrator.cancel(saga_id, actor="dashboard")
    return _back_to(saga_id)


@router.post("/sagas/{saga_id}/resolve")
async def resolve(
    saga_id: SagaId, request: Request, service: Operations, settings: AppSettings
) -> Response:
    """Mark a failed saga compensated by hand, with the operator's reason."""
    check_operator(request, settings)
    reason = " ".join((await _form(request)).get("reason", "").split())
    if not reason or len(reason) > MAX_REASON:
        raise HTTPException(status_code=422, detail=f"a reason of 1 to {MAX_REASON} characters")
    await service.orchestrator.resolve(saga_id, actor="dashboard", reason=reason)
    return _back_to(saga_id)
