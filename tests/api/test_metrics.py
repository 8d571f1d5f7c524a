"""``/metrics``: counters and histograms fed by the orchestrator's listeners, read back."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.api.support import ADMIN, failed_saga

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    """Every sample of ``/metrics``, by name and labels."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_checkouts_are_counted_by_outcome_step_and_result(client: httpx.AsyncClient) -> None:
    """The three demo checkouts read back as 3 started, 1 completed, 2 compensated, per step."""
    for order_id in ("order1", "order2", "order3"):
        assert (await client.post(f"/checkout/{order_id}")).status_code in (200, 400)

    got = await scrape(client)

    saga = {"saga": "checkout"}
    assert value(got, "sagakit_sagas_started_total", **saga) == 3
    assert value(got, "sagakit_sagas_finished_total", **saga, outcome="completed") == 1
    assert value(got, "sagakit_sagas_finished_total", **saga, outcome="compensated") == 2
    attempts = "sagakit_step_attempts_total"
    assert value(got, attempts, **saga, step="payment", result="succeeded") == 2
    assert value(got, attempts, **saga, step="payment", result="rejected") == 1
    assert value(got, attempts, **saga, step="inventory", result="succeeded") == 2
    assert value(got, attempts, **saga, step="shipping", result="succeeded") == 1
    assert value(got, attempts, **saga, step="shipping", result="rejected") == 1
    undo = "sagakit_compensation_attempts_total"
    assert value(got, undo, **saga, step="inventory", result="succeeded") == 1
    assert value(got, undo, **saga, step="payment", result="succeeded") == 1
    assert value(got, "sagakit_sagas", status="completed") == 1
    assert value(got, "sagakit_sagas", status="compensated") == 2


async def test_durations_are_observed_once_per_finished_saga_and_step(
    client: httpx.AsyncClient,
) -> None:
    """Each finished saga and each step result adds one observation to its histogram."""
    for order_id in ("order1", "order3"):
        await client.post(f"/checkout/{order_id}")

    got = await scrape(client)

    saga_count = "sagakit_saga_duration_seconds_count"
    assert value(got, saga_count, saga="checkout", outcome="completed") == 1
    assert value(got, saga_count, saga="checkout", outcome="compensated") == 1
    assert value(got, "sagakit_saga_duration_seconds_sum", saga="checkout", outcome="completed") > 0
    step_count = "sagakit_step_duration_seconds_count"
    assert value(got, step_count, saga="checkout", step="payment", result="succeeded") == 2
    assert value(got, step_count, saga="checkout", step="shipping", result="rejected") == 1
    inf = value(
        got,
        "sagakit_step_duration_seconds_bucket",
        saga="checkout",
        step="payment",
        result="succeeded",
        le="+Inf",
    )
    assert inf == 2


async def test_a_failed_saga_waits_for_an_operator_until_retried(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A compensation that runs out counts a failed saga; the operator's retry is counted too."""
    saga_id, set_up = await failed_saga(app)

    failed = await scrape(client)
    set_up.broken = False
    assert (await client.post(f"/sagas/{saga_id}/retry", headers=ADMIN)).status_code == 202
    await app.state.service.orchestrator.wait(saga_id, 5.0)
    retried = await scrape(client)

    saga = {"saga": "fragile"}
    assert value(failed, "sagakit_sagas_finished_total", **saga, outcome="failed") == 1
    assert value(failed, "sagakit_sagas", status="failed") == 1
    undo = "sagakit_compensation_attempts_total"
    assert value(failed, undo, **saga, step="set_up", result="exhausted") == 1
    assert value(retried, "sagakit_operator_actions_total", **saga, action="retry") == 1
    assert value(retried, undo, **saga, step="set_up", result="succeeded") == 1
    assert value(retried, "sagakit_sagas_finished_total", **saga, outcome="compensated") == 1
    assert value(retried, "sagakit_sagas", status="failed") == 0
