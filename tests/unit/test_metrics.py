"""Prometheus metrics of transitions: right counts, and each label child looked up once."""

from __future__ import annotations

import collections
from collections.abc import Callable

import pytest
from prometheus_client.metrics import MetricWrapperBase

from sagakit.observability.metrics import SagaMetrics
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, SagaStatus
from sagakit.saga import Saga, Step, StepContext
from sagakit.store import MemoryStore


class Ok(Step):
    """Succeeds."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def do(self, ctx: StepContext) -> JSON:
        return {"done": self.name}


def counting(
    metric: MetricWrapperBase, calls: collections.Counter[tuple[str, ...]]
) -> Callable[..., MetricWrapperBase]:
    """``metric.labels`` that also counts its calls by metric and label values."""
    labels = metric.labels

    def counted(*values: str) -> MetricWrapperBase:
        calls[(metric._name, *values)] += 1
        return labels(*values)

    return counted


async def test_each_label_child_is_looked_up_once_and_counts_every_transition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three sagas count three of everything, with one ``labels()`` call per label values."""
    metrics = SagaMetrics()
    calls: collections.Counter[tuple[str, ...]] = collections.Counter()
    for metric in (metrics.started, metrics.finished, metrics.saga_seconds, metrics.attempts):
        monkeypatch.setattr(metric, "labels", counting(metric, calls))
    monkeypatch.setattr(metrics.step_seconds, "labels", counting(metrics.step_seconds, calls))
    orchestrator = SagaOrchestrator(
        MemoryStore(), [Saga("order", [Ok("pay"), Ok("ship")])], listeners=[metrics]
    )
    for n in range(3):
        started = await orchestrator.start("order", {}, business_key=f"o-{n}")
        ended = await orchestrator.wait(started.instance.saga_id, 5.0)
        assert ended.status is SagaStatus.COMPLETED
    await orchestrator.shutdown()
    looked_up = dict(calls)

    assert metrics.started.labels("order")._value.get() == 3
    assert metrics.attempts.labels("order", "ship", "succeeded")._value.get() == 3
    assert metrics.finished.labels("order", "completed")._value.get() == 3
    assert ("sagakit_step_attempts", "order", "pay", "succeeded") in looked_up
    assert set(looked_up.values()) == {1}
