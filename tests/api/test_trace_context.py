"""A checkout's saga span continues the caller's W3C ``traceparent``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sagakit.observability import tracing
from sagakit.observability.tracing import SagaTracer
from tests.api.conftest import Serve, client_of

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


@pytest.fixture
async def traced(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FastAPI, InMemorySpanExporter]]:
    """The app exporting its spans to memory (as if OTEL_EXPORTER_OTLP_ENDPOINT were set)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setattr(tracing, "tracer_from_env", lambda: SagaTracer(provider))
    async with serve() as app:
        yield app, exporter


async def test_a_checkout_with_a_traceparent_continues_the_callers_trace(
    traced: tuple[FastAPI, InMemorySpanExporter],
) -> None:
    """The saga's span is in the caller's trace, a child of the caller's span."""
    app, exporter = traced
    header = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    async with client_of(app, headers={}) as http:
        assert (await http.post("/checkout/order1", headers=header)).status_code == 200
        assert (await http.post("/checkout/order3")).status_code == 400

    sagas = [s for s in exporter.get_finished_spans() if s.name == "saga checkout"]
    assert len(sagas) == 2
    continued = [
        s for s in sagas if s.attributes and s.attributes["sagakit.business_key"] == "order1"
    ]
    fresh = [s for s in sagas if s.attributes and s.attributes["sagakit.business_key"] == "order3"]
    assert continued[0].context is not None
    assert format(continued[0].context.trace_id, "032x") == TRACE_ID
    assert continued[0].parent is not None
    assert format(continued[0].parent.span_id, "016x") == PARENT_ID
    assert fresh[0].context is not None
    assert format(fresh[0].context.trace_id, "032x") != TRACE_ID
    assert fresh[0].parent is None
