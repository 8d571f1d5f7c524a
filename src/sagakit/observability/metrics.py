"""Prometheus metrics of saga transitions, right with one process or many.

:class:`SagaMetrics` is an orchestrator listener: the process that made a transition durable
counts it, so each transition is counted once however many processes share the store. With
several processes (``sagakit serve --workers N``), ``PROMETHEUS_MULTIPROC_DIR`` names a
directory where each keeps its values (see :mod:`sagakit.observability.multiproc`), and
:func:`exposition` adds them up at every scrape. Gauges of current state (sagas by status)
are read from the store at every scrape instead, so they are right whoever asks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Final, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from sagakit.observability.multiproc import multiprocess_dir
from sagakit.records import SagaEvent, SagaInstance, SagaStatus

#: Sagas take milliseconds when all goes well and up to half an hour of compensation retries.
SAGA_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
STEP_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

#: The ``result`` of a step attempt, by the event that ends it.
ATTEMPT_RESULT: Final = {
    "step_succeeded": "succeeded",
    "step_failed": "rejected",
    "step_retry": "error",
    "step_exhausted": "exhausted",
}
#: The ``result`` of a compensation attempt, by the event that ends it.
COMPENSATION_RESULT: Final = {
    "compensation_succeeded": "succeeded",
    "compensation_retry": "error",
    "compensation_failed": "exhausted",
}
#: The ``outcome`` of a saga, by the event that ends it.
OUTCOME: Final = {
    "saga_completed": "completed",
    "saga_compensated": "compensated",
    "saga_failed": "failed",
}
#: The ``action`` of an operator, by the event it records.
OPERATOR_ACTION: Final = {
    "operator_retry": "retry",
    "operator_cancel": "cancel",
    "operator_resolved": "resolve",
}


M = TypeVar("M", bound=MetricWrapperBase)


class _Children(Generic[M]):
    """A metric's children by label values, each looked up in prometheus-client once.

    ``labels()`` validates the values and takes a lock on every call; the label values here
    are saga and step names and fixed results, so the children are few and kept.
    """

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._known: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._known.get(values)
        if child is None:
            child = self._known[values] = self.metric.labels(*values)
        return child


class SagaMetrics:
    """Counters and histograms of saga transitions; call it as an orchestrator listener."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = Counter("sagakit_sagas_started", "Sagas started", ["saga"], registry=r)
        self.finished = Counter(
            "sagakit_sagas_finished",
            "Sagas that reached completed, compensated or failed (a retried saga ends again)",
            ["saga", "outcome"],
            registry=r,
        )
        self.recovered = Counter(
            "sagakit_sagas_recovered",
            "Sagas taken over from a process that went away",
            ["saga"],
            registry=r,
        )
        self.saga_seconds = Histogram(
            "sagakit_saga_duration_seconds",
            "From a saga's start to its end",
            ["saga", "outcome"],
            buckets=SAGA_BUCKETS,
            registry=r,
        )
        self.attempts = Counter(
            "sagakit_step_attempts",
            "Attempts of step actions, by result (succeeded, rejected, error, exhausted)",
            ["saga", "step", "result"],
            registry=r,
        )
        self.step_seconds = Histogram(
            "sagakit_step_duration_seconds",
            "From a step's first attempt to its result, retries included",
            ["saga", "step", "result"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.compensations = Counter(
            "sagakit_compensation_attempts",
            "Attempts of compensations, by result (succeeded, error, exhausted)",
            ["saga", "step", "result"],
            registry=r,
        )
        self.operator = Counter(
            "sagakit_operator_actions",
            "Operator actions on sagas (retry, cancel, resolve)",
            ["saga", "action"],
            registry=r,
        )

        self._started = _Children(self.started)
        self._finished = _Children(self.finished)
        self._recovered = _Children(self.recovered)
        self._saga_seconds = _Children(self.saga_seconds)
        self._attempts = _Children(self.attempts)
        self._step_seconds = _Children(self.step_seconds)
        self._compensations = _Children(self.compensations)
        self._operator = _Children(self.operator)

    def __call__(self, instance: SagaInstance, events: Sequence[SagaEvent]) -> None:
        """Count ``events``, just made durable for ``instance``."""
        saga = instance.name
        for event in events:
            kind = event.type
            if kind == "saga_started":
                self._started(saga).inc()
            elif kind == "saga_claimed":
                self._recovered(saga).inc()
            elif kind in OUTCOME:
                outcome = OUTCOME[kind]
                self._finished(saga, outcome).inc()
                duration = max(0.0, instance.updated_at - instance.created_at)
                self._saga_seconds(saga, outcome).observe(duration)
            elif kind in ATTEMPT_RESULT and event.step:
                self._attempt(instance, event.step, ATTEMPT_RESULT[kind])
            elif kind in COMPENSATION_RESULT and event.step:
                self._compensations(saga, event.step, COMPENSATION_RESULT[kind]).inc()
            elif kind in OPERATOR_ACTION:
                self._operator(saga, OPERATOR_ACTION[kind]).inc()

    def _attempt(self, instance: SagaInstance, step: str, result: str) -> None:
        self._attempts(instance.name, step, result).inc()
        if result == "error":
            return  # the step goes on: its duration is observed once it has a result
        record = next((s for s in instance.steps if s.name == step), None)
        if record is not None and record.started_at and record.finished_at:
            duration = max(0.0, record.finished_at - record.started_at)
            self._step_seconds(instance.name, step, result).observe(duration)


class _SagasByStatus(Collector):
    """The ``sagakit_sagas`` gauge, from counts the store just gave."""

    def __init__(self, counts: Mapping[SagaStatus, int]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "sagakit_sagas",
            "Saga instances by status (running, compensating, and failed ones waiting for an "
            "operator included), read from the store",
            labels=["status"],
        )
        for status in SagaStatus:
            gauge.add_metric([status.value], self.counts.get(status, 0))
        yield gauge


def exposition(metrics: SagaMetrics, counts: Mapping[SagaStatus, int]) -> bytes:
    """Prometheus text: every process's counters and histograms, and the store's gauge."""
    registry = CollectorRegistry()
    directory = multiprocess_dir()
    if directory is not None:
        # prometheus-client leaves this constructor unannotated.
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry.register(metrics.registry)
    registry.register(_SagasByStatus(counts))
    return generate_latest(registry)
