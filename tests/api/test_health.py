"""``/healthz`` and ``/metrics``."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI

from sagakit.errors import StoreError
from tests.api.support import json_of


async def test_healthz_answers_200_when_the_store_answers(client: httpx.AsyncClient) -> None:
    """A store that answers makes ``/healthz`` 200."""
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert json_of(response) == {"status": "ok"}


async def test_healthz_answers_200_even_when_the_store_fails(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Liveness does not depend on the store: restarting would not bring it back."""

    async def down() -> None:
        raise StoreError("disk on fire")

    monkeypatch.setattr(app.state.service.store, "ping", down)

    response = await client.get("/healthz")

    assert response.status_code == 200
    assert json_of(response) == {"status": "ok"}


def gauge(text: str, status: str) -> float:
    """The value of ``sagakit_sagas{status="..."}`` in Prometheus text."""
    found = re.search(rf'^sagakit_sagas\{{status="{status}"\}} (\S+)$', text, re.MULTILINE)
    assert found, f"no sagakit_sagas sample for {status} in:\n{text}"
    return float(found.group(1))


async def test_metrics_before_any_checkout_count_zero_of_every_status(
    client: httpx.AsyncClient,
) -> None:
    """Before any checkout the saga gauge shows every status at zero."""
    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE sagakit_sagas gauge" in response.text
    for status in ("running", "compensating", "completed", "compensated", "failed"):
        assert gauge(response.text, status) == 0


async def test_metrics_count_sagas_by_status_after_checkouts(client: httpx.AsyncClient) -> None:
    """After the three demo checkouts the gauge counts one completed and two compensated."""
    for order_id in ("order1", "order2", "order3"):
        assert (await client.post(f"/checkout/{order_id}")).status_code in (200, 400)

    text = (await client.get("/metrics")).text

    assert gauge(text, "completed") == 1
    assert gauge(text, "compensated") == 2
    assert gauge(text, "running") == 0
    assert gauge(text, "compensating") == 0
    assert gauge(text, "failed") == 0


async def test_openapi_describes_the_public_routes(client: httpx.AsyncClient) -> None:
    """``/openapi.json`` lists the contract's routes (not the dashboard) and ``/docs`` serves."""
    schema = json_of(await client.get("/openapi.json"))

    paths = schema["paths"]
    assert isinstance(paths, dict)
    assert {
        "/checkout/{order_id}",
        "/orders",
        "/orders/{order_id}",
        "/users",
        "/users/{user_id}",
        "/items",
        "/items/{item_id}",
        "/sagas",
        "/sagas/{saga_id}",
        "/sagas/{saga_id}/retry",
        "/healthz",
        "/metrics",
    } <= set(paths)
    assert not [p for p in paths if p.startswith("/dashboard")]
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
