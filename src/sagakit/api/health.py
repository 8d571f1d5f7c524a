"""Liveness and metrics."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response

from sagakit.api.deps import Service
from sagakit.api.responses import JSONResponse
from sagakit.api.schemas import Error
from sagakit.errors import StoreError

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
    """Prometheus text: sagas by status, read from the store (so right with many processes)."""
    registry = CollectorRegistry()
    gauge = Gauge("sagakit_sagas", "Saga instances by status", ["status"], registry=registry)
    for status, count in (await service.store.count_by_status()).items():
        gauge.labels(status=status.value).set(count)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
