"""Liveness and metrics."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response

from sagakit.api.deps import Service
from sagakit.api.responses import JSONResponse
from sagakit.api.schemas import Error
from sagakit.errors import StoreError
from sagakit.observability.metrics import exposition

router = APIRouter(tags=["operations"])


@router.get("/healthz", responses={503: {"model": Error, "description": "the store is down"}})
async def healthz(service: Service) -> Response:
    """200 when the store answers, 503 otherwise."""
    try:
        await service.store.ping()
    except StoreError as exc:
        return JSONResponse({"error": f"store unavailable: {exc.message}"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics", response_class=Response)
async def metrics(service: Service) -> Response:
    """Prometheus text: saga and step counters and durations, and sagas by status.

    Counters and histograms add up every process of ``serve --workers N``; the sagas in each
    status are read from the store.
    """
    counts = await service.store.count_by_status()
    text = exposition(service.instruments.metrics, counts)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
