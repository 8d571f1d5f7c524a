"""Saga instances: one with its steps and history, filtered pages of them, operator actions.

Every route needs a bearer token: a viewer's reads, the admin's everything. The operator's
actions (retry, cancel, resolve) and signals need the admin token; each is logged with the
client's address and recorded in the saga's history with the actor ``api:admin``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Final

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from pydantic import AfterValidator, BeforeValidator, JsonValue
from starlette.responses import Response

from sagakit.api.access import Admin, log_action, operator
from sagakit.api.deps import AppSettings, SagaId
from sagakit.api.operated import DomainErrors, Operations
from sagakit.api.responses import JSONResponse
from sagakit.api.schemas import (
    ID_PATTERN,
    CancelOut,
    Error,
    EventOut,
    ResolveIn,
    RetryOut,
    SagaOut,
    SagaPageOut,
    SagaSummary,
    SignalOut,
    StepOut,
    Text,
    plain_json,
)
from sagakit.records import SagaEvent, SagaInstance, SagaStatus, StepRecord
from sagakit.run import WAIT_FOREVER
from sagakit.store.activity import Filters, StuckRule, count_matching, stuck_reason, stuck_rule

READ_ERRORS: Final[dict[int | str, dict[str, object]]] = {
    401: {"model": Error, "description": "no valid token"},
}
router = APIRouter(
    tags=["sagas"],
    dependencies=[Depends(operator)],
    responses=READ_ERRORS,
    route_class=DomainErrors,
)

ADMIN_ERRORS: Final[dict[int | str, dict[str, object]]] = {
    403: {"model": Error, "description": "a viewer token: admin only"},
    404: {"model": Error, "description": "unknown saga"},
}


def iso(at: float) -> str:
    """A timestamp as ISO 8601 in UTC."""
    return datetime.fromtimestamp(at, UTC).isoformat()


def lease_iso(until: float | None) -> str | None:
    """When a lease runs out, in ISO 8601; ``None`` for none, or a saga parked for ever."""
    return None if until is None or until >= WAIT_FOREVER else iso(until)


def summary(saga: SagaInstance, rule: StuckRule | None = None) -> SagaSummary:
    """A saga as a listing shows it."""
    reason = stuck_reason(saga, time.time(), rule or StuckRule())
    return SagaSummary(
        saga_id=saga.saga_id,
        name=saga.name,
        status=saga.status.value,
        business_key=saga.business_key,
        error=saga.error,
        failed_step=saga.failed_step,
        created_at=iso(saga.created_at),
        updated_at=iso(saga.updated_at),
        owner=saga.owner,
        lease_expires_at=lease_iso(saga.lease_until),
        last_progress_at=iso(saga.updated_at),
        stuck=reason is not None,
        stuck_reason=reason,
    )


def duration_ms(step: StepRecord) -> float | None:
    """How long a step ran, from its start to its last finish, in milliseconds."""
    if step.started_at is None or step.finished_at is None:
        return None
    return round((step.finished_at - step.started_at) * 1000, 3)


def detail(saga: SagaInstance, events: list[SagaEvent], rule: StuckRule) -> SagaOut:
    """A saga with its input, steps and history."""
    return SagaOut(
        **summary(saga, rule).model_dump(),
        input=saga.input,
        steps=[
            StepOut(
                name=s.name,
                status=s.status.value,
                attempts=s.attempts,
                compensation_attempts=s.compensation_attempts,
                error=s.error,
                result=s.result,
                started_at=iso(s.started_at) if s.started_at else None,
                finished_at=iso(s.finished_at) if s.finished_at else None,
                duration_ms=duration_ms(s),
            )
            for s in saga.steps
        ],
        events=[
            EventOut(at=iso(e.at), type=e.type, step=e.step, attempt=e.attempt, detail=e.detail)
            for e in events
        ],
    )


@router.get("/sagas/{saga_id}", responses={404: {"model": Error}})
async def get_saga(saga_id: SagaId, service: Operations, settings: AppSettings) -> SagaOut:
    """A saga with its input, its steps and its history of events.

    `owner`, `lease_expires_at` and `last_progress_at` say who drives it and whether it
    moves; `stuck` is true when it is active but nobody moves it (see `stuck_reason`).
    """
    saga = await service.store.get(saga_id)
    if saga is None:
        raise HTTPException(status_code=404, detail=f"saga {saga_id!r} not found")
    return detail(saga, await service.store.events(saga_id), stuck_rule(settings))


def _instant(value: object) -> object:
    """An ISO 8601 query value as a datetime; one without an offset is taken as UTC."""
    if isinstance(value, str):
        at = datetime.fromisoformat(value)
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    return value


#: A point in time in a query: ISO 8601 only (a bare number is refused, not guessed at).
Instant = Annotated[datetime | None, BeforeValidator(_instant)]


@router.get(
    "/sagas",
    responses={422: {"model": Error, "description": "a bad filter, limit or cursor"}},
)
async def list_sagas(
    service: Operations,
    settings: AppSettings,
    status: Annotated[SagaStatus | None, Query(description="only sagas in this status")] = None,
    name: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="only sagas of this name, e.g. checkout"),
        Text,
    ] = None,
    business_key: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="only sagas started with this business key (for checkout: the order id)",
        ),
        Text,
    ] = None,
    created_after: Annotated[
        Instant,
        Query(
            description="ISO 8601; only sagas created at or after it (UTC when it has no offset)",
            examples=["2025-01-31T12:00:00Z"],
        ),
    ] = None,
    created_before: Annotated[
        Instant,
        Query(
            description="ISO 8601; only sagas created before it (UTC when it has no offset)",
            examples=["2025-02-01T00:00:00+01:00"],
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="at most this many sagas")] = 50,
    cursor: Annotated[
        str | None,
        Query(pattern=r"^[0-9]{1,18}$", description="the previous page's next_cursor"),
    ] = None,
) -> SagaPageOut:
    """A page of sagas, newest first, that match every filter given.

    `counts` holds how many sagas are in each status among those matching every filter but
    `status` (so the counts of the other statuses stay in sight).
    For the next page pass `next_cursor` back as `cursor`, with the same filters; it is null
    on the last page.
    """
    filters = Filters(
        name=name,
        business_key=business_key,
        created_after=created_after.timestamp() if created_after else None,
        created_before=created_before.timestamp() if created_before else None,
    )
    page = await service.store.list_sagas(
        status=status,
        name=filters.name,
        business_key=filters.business_key,
        created_after=filters.created_after,
        created_before=filters.created_before,
        limit=limit,
        cursor=cursor,
    )
    counts = await count_matching(service.store, filters)
    return SagaPageOut(
        sagas=[summary(s, stuck_rule(settings)) for s in page.sagas],
        next_cursor=page.next_cursor,
        counts={s.value: n for s, n in counts.items()},
    )


@router.post(
    "/sagas/{saga_id}/retry",
    status_code=202,
    response_model=RetryOut,
    responses={**ADMIN_ERRORS, 409: {"model": Error, "description": "the saga is not failed"}},
)
async def retry_saga(
    saga_id: SagaId, service: Operations, who: Admin, request: Request
) -> Response:
    """Resume the compensation of a `failed` saga where it stopped (admin).

    This process drives the compensation; the answer comes at once, with the saga
    `compensating`. The history records `operator_retry`.
    """
    log_action(request, who, "retry", saga_id)
    saga = await service.orchestrator.retry(saga_id, actor=who.actor)
    body = RetryOut(saga_id=saga.saga_id, status=saga.status.value)
    return JSONResponse(body.model_dump(), status_code=202)


SignalName = Annotated[str, Path(pattern=ID_PATTERN, description="the signal's name")]


@router.post(
    "/sagas/{saga_id}/signals/{name}",
    status_code=202,
    responses={**ADMIN_ERRORS, 409: {"model": Error, "description": "the saga is not running"}},
)
async def signal_saga(
    saga_id: SagaId,
    name: SignalName,
    service: Operations,
    who: Admin,
    request: Request,
    payload: Annotated[
        JsonValue,
        Body(description="any JSON: the waiting step's result", examples=[{"ok": 1}]),
        AfterValidator(plain_json),
    ] = None,
) -> SignalOut:
    """Deliver the external signal `name` to a `running` saga (admin): a webhook's landing.

    The request body (any JSON, or none) is the signal's payload: the waiting step's result,
    which later steps read. The signal is stored durably before the answer; one that comes
    before the saga waits is kept for it, and a second one of the same name changes nothing
    (`"new": false`). The saga resumes in this process at once; the history records
    `signal_received`.
    """
    log_action(request, who, f"signal {name}", saga_id)
    new = await service.orchestrator.signal(saga_id, name, payload)
    return SignalOut(saga_id=saga_id, signal=name, new=new)


@router.post(
    "/sagas/{saga_id}/cancel",
    status_code=202,
    responses={**ADMIN_ERRORS, 409: {"model": Error, "description": "the saga is not running"}},
)
async def cancel_saga(
    saga_id: SagaId, service: Operations, who: Admin, request: Request
) -> CancelOut:
    """Ask a `running` saga to stop and compensate the steps it did (admin).

    Whichever process drives the saga sees the request at its next step, compensates that
    step and the ones before it, and ends the saga `compensated`. The answer comes at once,
    with the saga still `running`. The history records `operator_cancel`, then
    `saga_cancelled`.
    """
    log_action(request, who, "cancel", saga_id)
    saga = await service.orchestrator.cancel(saga_id, actor=who.actor)
    return CancelOut(
        saga_id=saga.saga_id,
        status=saga.status.value,
        note=waiting_note(saga, service.orchestrator.owner),
    )


def waiting_note(saga: SagaInstance, me: str) -> str | None:
    """What an action waits for when another process holds ``saga``'s lease, or ``None``."""
    if saga.owner is None or saga.owner == me or saga.lease_until is None:
        return None
    return (
        f"held by {saga.owner}: it acts at its next step; if that process is gone, a worker"
        f" takes the saga over when the lease runs out at {iso(saga.lease_until)}"
    )


@router.post(
    "/sagas/{saga_id}/resolve",
    responses={
        **ADMIN_ERRORS,
        409: {"model": Error, "description": "the saga is not failed"},
        422: {"model": Error, "description": "reason missing, blank or over 1000 characters"},
    },
)
async def resolve_saga(
    saga_id: SagaId, body: ResolveIn, service: Operations, who: Admin, request: Request
) -> SagaSummary:
    """Mark a `failed` saga `compensated` by hand, once an operator has undone it (admin).

    Nothing is run: this records that the saga's effects were dealt with outside sagakit,
    and why. An order whose checkout was resolved may be checked out again. The history
    records `operator_resolved` with the reason.
    """
    log_action(request, who, "resolve", saga_id)
    saga = await service.orchestrator.resolve(saga_id, actor=who.actor, reason=body.reason)
    return summary(saga)
