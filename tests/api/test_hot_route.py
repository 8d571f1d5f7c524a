"""The checkout's hot route answers exactly as the application's route would, and only then."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sagakit.api import checkout
from sagakit.api.observe import Observe
from sagakit.errors import StoreError
from sagakit.shop.errors import CheckoutBlocked
from tests.api.conftest import Serve, client_of

#: Every kind of checkout request: answered by the hot route or declined to the application.
REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("POST", "/checkout/order1", {}),
    ("POST", "/checkout/order1", {}),  # joins its ended saga
    ("POST", "/checkout/order2", {}),  # payment refuses
    ("POST", "/checkout/order3?wait=false", {}),  # shipping refuses; compensated
    ("POST", "/checkout/order3?wait=0", {}),
    ("POST", "/checkout/order1?wait=1", {}),
    ("POST", "/checkout/order1?wait=true", {}),
    ("POST", "/checkout/no-such-order", {}),  # 404
    ("POST", "/checkout/bad%20id", {}),  # 422 from the route
    ("POST", "/checkout/" + "x" * 65, {}),  # 422: too long
    ("POST", "/checkout/order1?wait=maybe", {}),  # 422 from the route
    ("POST", "/checkout/order1?wait=yes", {}),  # declined, answered by the route
    ("POST", "/checkout/order1?wait=false&x=1", {}),  # declined
    ("GET", "/checkout/order1", {}),  # 405
    ("POST", "/checkout/order1", {"content-length": str(2 * 1024 * 1024)}),  # 413
    ("POST", "/checkout/blocked", {}),  # 409: its last saga failed
    ("POST", "/checkout/store-down", {}),  # 503
    ("POST", "/checkout/bug", {}),  # 500, never its details
]

#: What the service raises for the orders of the last three requests.
FAULTS: dict[str, Exception] = {
    "blocked": CheckoutBlocked("blocked", "saga-1", "refund failed"),
    "store-down": StoreError("the database is unreachable"),
    "bug": RuntimeError("a secret detail"),
}


def _with_faults(app: FastAPI) -> None:
    service = app.state.service
    checkout = service.checkout

    async def faulty(order_id: str, *, wait_seconds: float) -> Any:
        if order_id in FAULTS:
            raise FAULTS[order_id]
        return await checkout(order_id, wait_seconds=wait_seconds)

    service.checkout = faulty


def _hot_routes_off(app: FastAPI) -> None:
    for middleware in app.user_middleware:
        if middleware.cls is Observe:  # type: ignore[comparison-overlap]
            middleware.kwargs["hot"] = []


def _comparable(response: httpx.Response) -> tuple[int, Any, str]:
    body = response.json()
    if isinstance(body, dict) and "saga_id" in body:
        body["saga_id"] = "<saga id>"
    return response.status_code, body, response.headers["content-type"]


async def _answers(app: FastAPI) -> list[tuple[int, Any, str]]:
    _with_faults(app)
    answers = []
    async with client_of(app) as client:
        for method, url, headers in REQUESTS:
            response = await client.request(method, url, headers=headers)
            assert response.headers["x-request-id"]  # every answer names its request
            answers.append(_comparable(response))
    return answers


async def test_the_hot_route_answers_every_request_as_the_applications_route_does(
    serve: Serve, tmp_path: Path
) -> None:
    async with serve(database_url=f"sqlite:///{tmp_path / 'hot.db'}") as hot:
        with_hot = await _answers(hot)
    async with serve(database_url=f"sqlite:///{tmp_path / 'routed.db'}") as routed:
        _hot_routes_off(routed)
        without = await _answers(routed)
    assert [status for status, _, _ in with_hot] == [
        200, 200, 400, 400, 400, 200, 200, 404, 422, 422, 422, 200, 200, 405, 413, 409, 503, 500,
    ]  # fmt: skip
    assert with_hot == without
    assert with_hot[-1][1] == {"error": "internal server error"}


def _scope(app: FastAPI, method: str, path: str, query: bytes = b"", root: str = "") -> Any:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "root_path": root,
        "headers": [],
        "app": app,
    }


@pytest.mark.parametrize(
    ("method", "path", "query", "root", "claimed"),
    [
        ("POST", "/checkout/order1", b"", "", True),
        ("POST", "/checkout/order1", b"wait=false", "", True),
        ("POST", "/checkout/order1", b"wait=FALSE", "", False),
        ("POST", "/checkout/order1", b"wait=false&wait=true", "", False),
        ("POST", "/checkout/order 1", b"", "", False),
        ("POST", "/checkout/order1/", b"", "", False),
        ("POST", "/checkout/", b"", "", False),
        ("PUT", "/checkout/order1", b"", "", False),
        ("POST", "/shop/checkout/order1", b"", "/shop", False),
    ],
)
async def test_the_hot_route_claims_only_the_requests_it_answers_as_the_route_would(
    app: FastAPI, method: str, path: str, query: bytes, root: str, claimed: bool
) -> None:
    assert (checkout.claim(_scope(app, method, path, query, root)) is not None) is claimed


async def test_the_hot_route_declines_before_the_service_has_started(
    serve: Serve, tmp_path: Path
) -> None:
    async with serve() as app:
        service = app.state.service
    del app.state.service
    assert checkout.claim(_scope(app, "POST", "/checkout/order1")) is None
    app.state.service = service
    assert checkout.claim(_scope(app, "POST", "/checkout/order1")) is not None
