"""The dashboard's routes: the list, a saga's page, sign-in, and the operator's actions.

Pages answer their ``#live`` region alone when the script asks for it with
``X-Dashboard-Fragment: live``. Every page forbids framing and inline code other than its
own (a CSP with a fresh nonce), and is never cached. Without a session (or a bearer token)
every page answers ``401`` with the sign-in form. Actions (retry, cancel, resolve) need an
admin and, with a cookie, a same-origin request, and redirect back to the saga's page.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from html import escape
from typing import Annotated, Final
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AfterValidator
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sagakit.api.access import client_address, role_of
from sagakit.api.dashboard import bulk, views
from sagakit.api.dashboard.auth import check_operator, principal_of
from sagakit.api.deps import AppSettings, SagaId, get_settings
from sagakit.api.errors import status_of
from sagakit.api.operated import DomainErrors, Operated, Operations
from sagakit.api.schemas import FORBIDDEN_CHARACTERS, plain_text
from sagakit.api.sessions import COOKIE, sessions_of
from sagakit.api.throttle import SignInThrottle
from sagakit.errors import SagakitError
from sagakit.records import SagaInstance, SagaStatus
from sagakit.store.activity import Filters, count_matching, stuck_rule

logger = logging.getLogger("sagakit.auth")


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
#: An operator action, given who acts.
Action = Callable[[str], Awaitable[SagaInstance]]
MAX_REASON: Final = 500
Text = Annotated[str, Query(max_length=64), AfterValidator(plain_text)]


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
    return _html("Sign in", views.sign_in(), signed=False, status=401)


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
    trail: Annotated[str, Query(pattern=r"^[0-9,]{0,1000}$")] = "",
    retried: Annotated[int | None, Query(ge=0, le=100_000)] = None,
) -> Response:
    """The sagas, newest first, with counts per status and filters; or the sign-in form."""
    principal = await principal_of(request)
    if principal is None:
        return _signed_out(request)
    filters = views.ListFilters(
        status=status,
        name=name.strip(),
        key=key.strip(),
        created_after=created_after,
        created_before=created_before,
        cursor=cursor,
        trail=tuple(trail.split(",")) if trail and cursor else (),
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
    counts = await count_matching(
        service.store,
        Filters(
            name=filters.name or None,
            business_key=filters.key or None,
            created_after=after,
            created_before=before,
        ),
    )
    rule = stuck_rule(settings)
    if _wants_fragment(request):
        return _fragment(views.live_list(page, counts, filters, rule))
    notice = f"Not a date and time, ignored: {', '.join(unreadable)}" if unreadable else ""
    if retried is not None:
        notice = f"Retry started for {retried} failed saga{'' if retried == 1 else 's'}."
    body = views.saga_list(page, counts, filters, notice, rule, can_act=principal.is_admin)
    return _html("Sagas", body, signed=True)


@router.get("/sagas/{saga_id}", response_class=HTMLResponse)
async def saga_page(
    saga_id: SagaId, request: Request, service: Operations, settings: AppSettings
) -> Response:
    """One saga: summary, actions, steps and the timeline of its attempts and compensations."""
    principal = await principal_of(request)
    if principal is None:
        return _signed_out(request)
    saga = await service.store.get(saga_id)
    if saga is None:
        body = f"<h1>No saga {escape(saga_id)}</h1>"
        return _html("Not found", body, signed=True, status=404)
    events = await service.store.events(saga_id)
    rule = stuck_rule(settings)
    if _wants_fragment(request):
        return _fragment(views.live_saga(saga, events, can_act=principal.is_admin, rule=rule))
    body = views.saga_page(saga, events, can_act=principal.is_admin, rule=rule)
    return _html(f"Saga {saga.saga_id}", body, signed=True)


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields, first value each (no multipart parser needed)."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items()}


def _throttle(request: Request) -> SignInThrottle:
    throttle: SignInThrottle = request.app.state.sign_in_throttle
    return throttle


@router.post("/login")
async def login(request: Request, settings: AppSettings) -> Response:
    """Open a session for the admin or a viewer token from the form, and set its cookie."""
    address = client_address(request)
    throttle = _throttle(request)
    wait = throttle.retry_after(address)
    if wait is not None:
        logger.warning("sign-in refused: too many failures", extra={"client": address})
        body = views.sign_in(f"Too many failed sign-ins: try again in {wait} s.")
        refused = _html("Sign in", body, signed=False, status=429)
        refused.headers["retry-after"] = str(wait)
        return refused
    token = (await _form(request)).get("token", "")
    role = role_of(settings, token)
    if role is None:
        throttle.failed(address)
        logger.warning("sign-in failed: wrong token", extra={"client": address})
        body = views.sign_in("That is not a valid token.")
        return _html("Sign in", body, signed=False, status=401)
    session_id, session = await sessions_of(request).open(role, token)
    logger.info(
        "signed in as %s",
        role.value,
        extra={"client": address, "actor": f"dashboard:{session.label}", "role": role.value},
    )
    response = RedirectResponse(views.base(), status_code=303)
    sessions_of(request).set_cookie(request, response, session_id)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (in the database, so a copy of the cookie stops working too)."""
    ended = await sessions_of(request).close(request)
    if ended is not None:
        logger.info(
            "signed out",
            extra={"client": client_address(request), "actor": f"dashboard:{ended.label}"},
        )
    response = RedirectResponse(views.base(), status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _back_to(saga_id: str) -> Response:
    return RedirectResponse(f"{views.base()}/sagas/{saga_id}", status_code=303)


async def _act(
    request: Request, service: Operated, saga_id: str, action: str, run: Action
) -> Response:
    """Check the operator, run the action; back to the saga's page, or the page with why not."""
    who = await check_operator(request, action, saga_id)
    try:
        await run(who.actor)
    except SagakitError as exc:
        return await _refused(request, service, saga_id, exc.message, status_of(exc))
    return _back_to(saga_id)


async def _refused(
    request: Request, service: Operated, saga_id: str, message: str, status: int
) -> Response:
    """The saga's page again, with the reason the action was refused above it."""
    notice = f'<p class="notice refused" role="alert">{escape(message)}</p>'
    saga = await service.store.get(saga_id)
    if saga is None:
        return _html(
            "Refused", f"{notice}<h1>No saga {escape(saga_id)}</h1>", signed=True, status=status
        )
    events = await service.store.events(saga_id)
    rule = stuck_rule(await get_settings(request))
    body = notice + views.saga_page(saga, events, can_act=True, rule=rule)
    return _html(f"Saga {saga_id}", body, signed=True, status=status)


@router.post("/sagas/{saga_id}/retry")
async def retry(saga_id: SagaId, request: Request, service: Operations) -> Response:
    """Resume a failed saga's compensation."""
    return await _act(
        request,
        service,
        saga_id,
        "retry",
        lambda actor: service.orchestrator.retry(saga_id, actor=actor),
    )


@router.post("/sagas/{saga_id}/cancel")
async def cancel(saga_id: SagaId, request: Request, service: Operations) -> Response:
    """Ask a running saga to stop and compensate what it did."""
    return await _act(
        request,
        service,
        saga_id,
        "cancel",
        lambda actor: service.orchestrator.cancel(saga_id, actor=actor),
    )


@router.post("/sagas/{saga_id}/resolve")
async def resolve(saga_id: SagaId, request: Request, service: Operations) -> Response:
    """Mark a failed saga compensated by hand, with the operator's reason."""
    reason = " ".join((await _form(request)).get("reason", "").split())
    if not reason or len(reason) > MAX_REASON or FORBIDDEN_CHARACTERS.search(reason):
        await check_operator(request, "resolve", saga_id)
        message = f"A reason of 1 to {MAX_REASON} characters, no control characters, is needed."
        return await _refused(request, service, saga_id, message, 422)
    return await _act(
        request,
        service,
        saga_id,
        "resolve",
        lambda actor: service.orchestrator.resolve(saga_id, actor=actor, reason=reason),
    )


# Declared here, not included from a router of its own: the dashboard's base path is read
# off the route this module declares (see ``_base``).
router.add_api_route("/retry-failed", bulk.retry_failed, methods=["POST"])
