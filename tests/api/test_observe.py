"""One line and one count per request: the access log and the HTTP metrics."""

from __future__ import annotations

import logging
import re

import httpx
import pytest


async def test_each_request_logs_one_access_line_with_its_route_template(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Method, route template (not the raw path), status, duration, client and request id."""
    caplog.set_level(logging.INFO, logger="sagakit.access")
    response = await client.get("/orders/order1", headers={"X-Request-ID": "req-1"})
    missing = await client.get("/no/such/path")

    lines = [r for r in caplog.records if r.name == "sagakit.access"]
    assert [r.getMessage() for r in lines] == ["GET /orders/{order_id} 200", "GET unmatched 404"]
    first = lines[0]
    assert getattr(first, "route", None) == "/orders/{order_id}"
    assert getattr(first, "status", None) == 200
    assert getattr(first, "client", None) == "127.0.0.1"
    assert 0 < getattr(first, "duration_ms", 0) < 10_000
    assert response.headers["x-request-id"] == "req-1"
    assert missing.status_code == 404


def sample(text: str, pattern: str) -> float:
    """The value of the one sample whose line matches ``pattern``."""
    found = re.search(rf"^{pattern} (\S+)$", text, re.MULTILINE)
    assert found, f"no {pattern} in:\n{text}"
    return float(found.group(1))


async def test_metrics_count_requests_by_route_method_and_status_with_latency(
    client: httpx.AsyncClient,
) -> None:
    """Two reads of an order and a 404 appear by route and status, with a latency histogram."""
    for order_id in ("order1", "order2", "nope"):
        await client.get(f"/orders/{order_id}")
    text = (await client.get("/metrics")).text

    route = 'method="GET",route="/orders/\\{order_id\\}"'
    assert sample(text, rf'sagakit_http_requests_total\{{{route},status="200"\}}') == 2
    assert sample(text, rf'sagakit_http_requests_total\{{{route},status="404"\}}') == 1
    count = rf"sagakit_http_request_duration_seconds_count\{{{route}\}}"
    assert sample(text, count) == 3


async def test_one_info_line_says_how_each_saga_ended(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A completed and a compensated checkout each log one info line: outcome, duration, step."""
    caplog.set_level(logging.INFO, logger="sagakit.sagas")
    done = (await client.post("/checkout/order1")).json()["saga_id"]
    undone = (await client.post("/checkout/order3")).json()["saga_id"]

    endings = {
        getattr(r, "saga_id", None): r
        for r in caplog.records
        if r.name == "sagakit.sagas" and hasattr(r, "outcome")
    }
    assert set(endings) == {done, undone}
    assert endings[done].levelno == logging.INFO
    assert getattr(endings[done], "outcome", None) == "completed"
    assert getattr(endings[undone], "outcome", None) == "compensated"
    assert getattr(endings[undone], "failed_step", None) == "shipping"
    assert getattr(endings[done], "duration_ms", -1) >= 0
    assert getattr(endings[done], "saga", None) == "checkout"
