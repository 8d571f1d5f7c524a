"""OpenTelemetry spans: one per saga and one per step attempt (the ``otel`` extra).

:class:`SagaTracer` is an orchestrator listener. A saga's span runs from its start to its end
in the process that drives it (a process that takes a saga over opens a span of its own);
each attempt of a step's action (``step payment``) or compensation (``compensate payment``)
is a child span, from the moment its start was recorded to its result. A retried attempt's
start is recorded when it is scheduled, so its span includes the backoff before it.

Only imported when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (see
:mod:`sagakit.observability.instruments`): without the extra installed nothing changes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer, TracerProvider

from sagakit.records import SagaEvent, SagaInstance, now

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

#: The events that end a step attempt, and the result each records.
ATTEMPT_END: Final = {
    "step_succeeded": "succeeded",
    "step_failed": "rejected",
    "step_retry": "error",
    "step_exhausted": "exhausted",
    "saga_cancelled": "cancelled",
}
#: The events that end a compensation attempt, and the result each records.
COMPENSATION_END: Final = {
    "compensation_succeeded": "succeeded",
    "compensation_retry": "error",
    "compensation_failed": "exhausted",
}
#: The events that end a saga, and its outcome.
SAGA_END: Final = {
    "saga_completed": "completed",
    "saga_compensated": "compensated",
    "saga_failed": "failed",
}
#: The events that start or end an attempt; every other one is noted on the saga's span.
ATTEMPT_EVENTS: Final = frozenset(
    {"saga_started", "step_started", "compensation_attempt", *ATTEMPT_END, *COMPENSATION_END}
) - {"saga_cancelled"}
#: Sagas followed at once, at most: beyond, the oldest span is ended as abandoned.
DEFAULT_LIMIT: Final = 10_000


def _ns(at: float) -> int:
    return int(at * 1_000_000_000)


class SagaTracer:
    """Spans of sagas and their step attempts, from the orchestrator's transitions."""

    def __init__(self, provider: TracerProvider, *, limit: int = DEFAULT_LIMIT) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("sagakit")
        self.limit = limit
        self._sagas: dict[str, Span] = {}
        self._attempts: dict[tuple[str, str, str], Span] = {}

    def __call__(self, instance: SagaInstance, events: Sequence[SagaEvent]) -> None:
        """Open and close spans for ``events``, just made durable for ``instance``."""
        for event in events:
            self._on(instance, event)

    def _on(self, instance: SagaInstance, event: SagaEvent) -> None:
        kind, step, at = event.type, event.step, _ns(event.at)
        if kind == "saga_started":
            self._saga(instance, at, fresh=True)
        if kind in ("saga_started", "step_started") and step:
            self._begin(instance, "step", step, event.attempt or 1, at)
        elif kind in ATTEMPT_END and step:
            self._end(instance.saga_id, "step", step, ATTEMPT_END[kind], event.detail, at)
            if kind == "step_retry":
                self._begin(instance, "step", step, (event.attempt or 0) + 1, at)
        elif kind == "compensation_attempt" and step:
            self._begin(instance, "compensate", step, event.attempt or 1, at)
        elif kind in COMPENSATION_END and step:
            result = COMPENSATION_END[kind]
            self._end(instance.saga_id, "compensate", step, result, event.detail, at)
        if kind in SAGA_END:
            self._finish(instance, SAGA_END[kind], at)
        elif kind not in ATTEMPT_EVENTS:
            self._saga(instance, at).add_event(kind, _attributes(event), timestamp=at)

    def _saga(self, instance: SagaInstance, at: int, *, fresh: bool = False) -> Span:
        """The saga's span; opened now if this process had none (``fresh``: it just started)."""
        span = self._sagas.get(instance.saga_id)
        if span is not None:
            return span
        if len(self._sagas) >= self.limit:
            self._abandon(next(iter(self._sagas)), at)
        attributes: dict[str, str | bool] = {
            "sagakit.saga_id": instance.saga_id,
            "sagakit.saga": instance.name,
        }
        if instance.business_key is not None:
            attributes["sagakit.business_key"] = instance.business_key
        if not fresh:
            attributes["sagakit.resumed"] = True
        span = self.tracer.start_span(
            f"saga {instance.name}",
            attributes=attributes,
            start_time=_ns(instance.created_at) if fresh else at,
        )
        self._sagas[instance.saga_id] = span
        return span

    def _begin(self, instance: SagaInstance, kind: str, step: str, attempt: int, at: int) -> None:
        parent = trace.set_span_in_context(self._saga(instance, at))
        key = (instance.saga_id, kind, step)
        interrupted = self._attempts.pop(key, None)
        if interrupted is not None:
            interrupted.set_attribute("sagakit.result", "interrupted")
            interrupted.end(end_time=at)
        self._attempts[key] = self.tracer.start_span(
            f"{kind} {step}",
            context=parent,
            attributes={
                "sagakit.saga_id": instance.saga_id,
                "sagakit.step": step,
                "sagakit.attempt": attempt,
            },
            start_time=at,
        )

    def _end(
        self, saga_id: str, kind: str, step: str, result: str, detail: str | None, at: int
    ) -> None:
        span = self._attempts.pop((saga_id, kind, step), None)
        if span is None:
            return  # its start was recorded by another process
        span.set_attribute("sagakit.result", result)
        if result != "succeeded":
            span.set_status(Status(StatusCode.ERROR, detail or result))
        span.end(end_time=at)

    def _finish(self, instance: SagaInstance, outcome: str, at: int) -> None:
        span = self._saga(instance, at)
        del self._sagas[instance.saga_id]
        self._close_attempts(instance.saga_id, at)
        span.set_attribute("sagakit.outcome", outcome)
        if instance.error:
            span.set_attribute("sagakit.error", instance.error)
        if outcome == "failed":
            span.set_status(Status(StatusCode.ERROR, instance.error or outcome))
        span.end(end_time=at)

    def _close_attempts(self, saga_id: str, at: int) -> None:
        for key in [k for k in self._attempts if k[0] == saga_id]:
            self._attempts.pop(key).end(end_time=at)

    def _abandon(self, saga_id: str, at: int) -> None:
        span = self._sagas.pop(saga_id)
        self._close_attempts(saga_id, at)
        span.set_attribute("sagakit.abandoned", True)
        span.end(end_time=at)

    def close(self) -> None:
        """End the spans still open (this process stops driving those sagas) and flush."""
        for saga_id in list(self._sagas):
            self._abandon(saga_id, _ns(now()))
        shutdown = getattr(self.provider, "shutdown", None)
        if callable(shutdown):
            shutdown()


def _attributes(event: SagaEvent) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {}
    if event.step is not None:
        attributes["sagakit.step"] = event.step
    if event.attempt is not None:
        attributes["sagakit.attempt"] = event.attempt
    if event.detail is not None:
        attributes["sagakit.detail"] = event.detail
    return attributes


#: The variables that choose the OTLP transport, the more specific first.
PROTOCOL_ENV: Final = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def otlp_protocol() -> str:
    """``grpc`` or ``http/protobuf`` (the default), as the ``OTEL_*`` variables ask."""
    for name in PROTOCOL_ENV:
        value = os.environ.get(name, "").strip().lower()
        if value:
            return "grpc" if value == "grpc" else "http/protobuf"
    return "http/protobuf"


def span_exporter() -> SpanExporter:
    """The OTLP span exporter of the protocol asked for (its endpoint from ``OTEL_*`` too)."""
    if otlp_protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def tracer_from_env() -> SagaTracer:
    """A tracer exporting over OTLP (HTTP, or gRPC with ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``).

    Raises ``ImportError`` when the ``otel`` extra is not installed.
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "sagakit")})
    provider = SdkTracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(span_exporter()))
    return SagaTracer(provider)
