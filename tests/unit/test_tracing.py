"""OpenTelemetry spans of sagas and step attempts, and tracing only when it is asked for."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from sagakit.errors import StepFailed
from sagakit.observability import instruments
from sagakit.observability.tracing import SagaTracer
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, SagaStatus
from sagakit.retry import RetryPolicy
from sagakit.saga import Saga, Step, StepContext
from sagakit.store import MemoryStore


class Ok(Step):
    """Succeeds; its compensation succeeds."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def do(self, ctx: StepContext) -> JSON:
        return {"done": self.name}


class Refuse(Step):
    """Refuses, as a business rule would."""

    name = "ship"

    async def do(self, ctx: StepContext) -> JSON:
        raise StepFailed("Invalid shipping address")


class Flaky(Step):
    """Fails its first attempt with a transient error, then succeeds."""

    name = "charge"
    retry = RetryPolicy(max_attempts=3, initial_delay=0)

    async def do(self, ctx: StepContext) -> JSON:
        if ctx.attempt == 1:
            raise ConnectionError("bank unreachable")
        return {"charged": True}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Where the spans of the tracer under test end up."""
    memory = InMemorySpanExporter()
    yield memory
    memory.shutdown()


async def run(exporter: InMemorySpanExporter, *steps: Step) -> list[ReadableSpan]:
    """Run a saga of ``steps`` to its end with a tracer listening; its finished spans."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = SagaTracer(provider)
    store = MemoryStore()
    orchestrator = SagaOrchestrator(store, [Saga("order", list(steps))], listeners=[tracer])
    started = await orchestrator.start("order", {}, business_key="o-1")
    ended = await orchestrator.wait(started.instance.saga_id, 5.0)
    assert not ended.status.is_active
    await orchestrator.shutdown()
    tracer.close()
    return list(exporter.get_finished_spans())


def by_name(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    """Spans grouped by name, in the order they ended."""
    grouped: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        grouped.setdefault(span.name, []).append(span)
    return grouped


async def test_a_refused_saga_is_one_span_with_a_child_per_attempt_and_compensation(
    exporter: InMemorySpanExporter,
) -> None:
    """A refusal gives the saga's span, and under it each attempt and the undo, in one trace."""
    spans = by_name(await run(exporter, Ok("reserve"), Refuse()))

    assert sorted(spans) == ["compensate reserve", "saga order", "step reserve", "step ship"]
    [saga] = spans["saga order"]
    assert saga.attributes is not None
    assert saga.attributes["sagakit.outcome"] == "compensated"
    assert saga.attributes["sagakit.business_key"] == "o-1"
    assert saga.context is not None
    for name in ("step reserve", "step ship", "compensate reserve"):
        [child] = spans[name]
        assert child.parent is not None
        assert child.parent.span_id == saga.context.span_id
        assert child.context is not None
        assert child.context.trace_id == saga.context.trace_id
    [ship] = spans["step ship"]
    assert ship.status.status_code is StatusCode.ERROR
    assert ship.status.description == "Invalid shipping address"
    assert ship.attributes is not None
    assert ship.attributes["sagakit.result"] == "rejected"
    [undo] = spans["compensate reserve"]
    assert undo.attributes is not None
    assert undo.attributes["sagakit.result"] == "succeeded"
    assert saga.end_time is not None
    assert undo.end_time is not None
    assert undo.end_time <= saga.end_time


async def test_each_attempt_of_a_retried_step_is_a_span_of_its_own(
    exporter: InMemorySpanExporter,
) -> None:
    """A step that fails once and then succeeds gives two attempt spans: error, then success."""
    spans = by_name(await run(exporter, Flaky()))

    attempts = spans["step charge"]
    assert [(s.attributes or {}).get("sagakit.attempt") for s in attempts] == [1, 2]
    assert [s.status.status_code for s in attempts] == [StatusCode.ERROR, StatusCode.UNSET]
    assert "bank unreachable" in (attempts[0].status.description or "")
    [saga] = spans["saga order"]
    assert (saga.attributes or {})["sagakit.outcome"] == "completed"


def test_without_an_otlp_endpoint_no_tracer_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no ``OTEL_EXPORTER_OTLP_*ENDPOINT`` set, the service gets metrics and logs only."""
    for name in instruments.OTLP_ENDPOINT_ENV:
        monkeypatch.delenv(name, raising=False)

    tools = instruments.instruments()

    assert tools.tracer is None
    assert len(tools.listeners) == 2


def test_an_otlp_endpoint_makes_an_exporting_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    """With an endpoint set and the ``otel`` extra installed, a tracer listens too."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")

    tools = instruments.instruments()
    try:
        assert isinstance(tools.tracer, SagaTracer)
        assert tools.tracer in tools.listeners
    finally:
        tools.close()


async def test_an_otlp_endpoint_without_opentelemetry_installed_breaks_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without OpenTelemetry importable, an endpoint only earns a warning; sagas still run."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    for module in [m for m in sys.modules if m.startswith("opentelemetry")]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "sagakit.observability.tracing")

    with caplog.at_level(logging.WARNING, logger="sagakit.observability"):
        tools = instruments.instruments()
    orchestrator = SagaOrchestrator(
        MemoryStore(), [Saga("order", [Ok("reserve")])], listeners=tools.listeners
    )
    started = await orchestrator.start("order", {})
    ended = await orchestrator.wait(started.instance.saga_id, 5.0)
    await orchestrator.shutdown()

    assert tools.tracer is None
    assert "OpenTelemetry is not installed" in caplog.text
    assert ended.status is SagaStatus.COMPLETED


@pytest.mark.parametrize(
    ("env", "module"),
    [
        ({}, "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        ),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        ),
    ],
    ids=["default-http", "grpc", "http", "traces-variable-wins"],
)
def test_the_otlp_protocol_variable_chooses_grpc_or_http(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], module: str
) -> None:
    """``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL=grpc`` exports over gRPC; otherwise over HTTP."""
    from sagakit.observability import tracing

    for name in tracing.PROTOCOL_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    exporter = tracing.span_exporter()
    assert type(exporter).__module__ == module
    exporter.shutdown()
