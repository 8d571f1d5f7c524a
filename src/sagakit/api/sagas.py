"""Saga instances: one with its steps and history, pages of them, and the operator's retry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from starlette.responses import Response

from sagakit.api.deps import Admin, SagaId, Service
from sagakit.api.responses import JSONResponse
from sagakit.api.schemas import (
    Error,
    EventOut,
    RetryOut,
    SagaOut,
    SagaPageOut,
    SagaSummary,
    StepOut,
)
from sagakit.records import SagaEvent, SagaInstance, SagaStatus

router = APIRouter(tags=["sagas"])


def iso(at: float) -> str:
    """A timestamp as ISO 8601 in UTC."""
    return datetime.fromtimestamp(at, UTC).isoformat()


def summary(saga: SagaInstance) -> SagaSummary:
    """A saga as a listing shows it."""
    return SagaSummary(
        saga_id=saga.saga_id,
        name=saga.name,
        status=saga.status.value,
        business_key=saga.business_key,
        error=saga.error,
        failed_step=saga.failed_step,
        created_at=iso(saga.created_at),
        updated_at=iso(saga.updated_at),
    )


def detail(saga: SagaInstance, events: list[SagaEvent]) -> SagaOut:
    """A saga with its input, steps and history."""
    return SagaOut(
        **summary(saga).model_dump(),
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
            )
            for s in saga.steps
        ],
        events=[
            EventOut(at=iso(e.at), type=e.type, step=e.step, attempt=e.attempt, detail=e.detail)
            for e in events
        ],
    )


@router.get("/sagas/{saga_id}", responses={404: {"model": Error}})
async def get_saga(saga_id: SagaId, service: Service) -> SagaOut:
    """A saga with its input, its steps and its history of events."""
    saga = await service.store.get(saga_id)
    if saga is None:
        raise HTTPException(status_code=404, detail=f"saga {saga_id!r} not found")
    return detail(saga, await service.store.events(saga_id))


@router.get("/sagas", responses={422: {"model": Error}})
async def list_sagas(
    service: Service,
    status: SagaStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> SagaPageOut:
    """A page of sagas, newest first, optionally of one status."""
    page = await service.store.list_sagas(status=status, limit=limit, cursor=cursor)
    return SagaPageOut(sagas=[summary(s) for s in page.sagas], next_cursor=page.next_cursor)


@router.post(
    "/sagas/{saga_id}/retry",
    status_code=202,
    dependencies=[Admin],
    responses={
        401: {"model": Error, "description": "admin token missing or wrong"},
        404: {"model": Error, "description": "unknown saga"},
        409: {"model": Error, "description": "the saga is not failed"},
    },
)
async def retry_saga(saga_id: SagaId, service: Service) -> Response:
    """Resume the compensation of a ``failed`` saga (admin)."""
    saga = await service.orchestrator.retry(saga_id, actor="admin API")
    body = RetryOut(saga_id=saga.saga_id, status=saga.status.value)
    return JSONResponse(body.model_dump(), status_code=202)
