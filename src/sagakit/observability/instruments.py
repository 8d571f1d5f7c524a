"""The listeners a service gives its orchestrator: metrics, logs and, when asked, traces."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sagakit.observability.logs import SagaLog
from sagakit.observability.metrics import SagaMetrics
from sagakit.orchestrator import Listener

if TYPE_CHECKING:
    from sagakit.observability.tracing import SagaTracer

logger = logging.getLogger("sagakit.observability")

#: Either variable asks for traces, as in every OpenTelemetry SDK.
OTLP_ENDPOINT_ENV: Final = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


@dataclass(frozen=True, slots=True, kw_only=True)
class Instruments:
    """A service's metrics, and every listener to give its orchestrator."""

    metrics: SagaMetrics
    tracer: SagaTracer | None = None

    @property
    def listeners(self) -> list[Listener]:
        """The orchestrator listeners: metrics, logs, and traces when configured."""
        listeners: list[Listener] = [self.metrics, SagaLog()]
        if self.tracer is not None:
            listeners.append(self.tracer)
        return listeners

    def close(self) -> None:
        """Flush what must be flushed (the spans still buffered)."""
        if self.tracer is not None:
            self.tracer.close()


def tracer_from_env() -> SagaTracer | None:
    """A tracer exporting over OTLP when an endpoint is configured and OpenTelemetry installed."""
    if not any(os.environ.get(name) for name in OTLP_ENDPOINT_ENV):
        return None
    try:
        from sagakit.observability import tracing

        return tracing.tracer_from_env()
    except ImportError as exc:
        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed "
            "(pip install 'sagakit[otel]'); no traces are exported: %s",
            exc,
        )
        return None


def instruments() -> Instruments:
    """Fresh metrics, and a tracer if the environment asks for one."""
    return Instruments(metrics=SagaMetrics(), tracer=tracer_from_env())
