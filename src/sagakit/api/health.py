"""Liveness, readiness and metrics."""

from __future__ import annotations

import time

from fastapi import APIRouter
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response

from sagakit.api.deps import AppSettings, Service
from sagakit.api.responses import JSONResponse
from sagakit.api.schemas import Error
from sagakit.errors import StoreError
from sagakit.observability.metrics import exposition
from sagakit.store.activity import activity, stuck_rule
from sagakit.store.readiness import applied_versions, probe_write, schema_problems

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> Response:
    """Liveness: 200 while the process runs and answers, whatever its store's state.

    A store that is down makes `/readyz` 503, not this: restarting the process would not
    bring the database back.
    """
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    responses={
        503: {
            "model": Error,
            "description": "the store refuses writes, or its schema"
            " is not the one this code expects",
        }
    },
)
async def readyz(service: Service) -> Response:
    """Readiness: 200 when the store accepts a write now and its schema is current.

    The write is real (one row of `sagakit_readiness`, through the path every saga
    transition takes). The answer names the schema versions: `{"status": "ready",
    "schema": {"sagas": 7, ...}}`.
    """
    try:
        await probe_write(service.store, time.time())
        problems = await schema_problems(service.store)
        versions = await applied_versions(service.store)
    except StoreError as exc:
        return JSONResponse({"error": f"store refuses writes: {exc.message}"}, status_code=503)
    if problems:
        return JSONResponse({"error": "; ".join(problems)}, status_code=503)
    return JSONResponse({"status": "ready", "schema": versions})


@router.get("/metrics", response_class=Response)
async def metrics(service: Service, settings: AppSettings) -> Response:
    """Prometheus text: saga and step counters and durations, sagas by status, stuck ones.

    Counters and histograms add up every process of ``serve --workers N``; the sagas in each
    status, the oldest active saga's age and the stuck sagas per name are read from the store.
    """
    counts = await service.store.count_by_status()
    now = time.time()
    active = await activity(service.store, now, stuck_rule(settings))
    text = exposition(service.instruments.metrics, counts, active, now)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
