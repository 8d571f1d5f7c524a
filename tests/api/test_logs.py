"""Request ids and the logs of a checkout: every line names its request, saga, step, attempt."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator

import httpx
import pytest

from sagakit.observability.logs import formatter

Lines = Callable[[], list[dict[str, object]]]


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    """Every ``sagakit`` log line from DEBUG up, rendered as JSON; a function that reads them."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(formatter("json"))
    log = logging.getLogger("sagakit")
    saved = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        log.removeHandler(handler)
        log.setLevel(saved)


async def test_a_request_id_sent_is_echoed(client: httpx.AsyncClient) -> None:
    """An ``X-Request-ID`` the caller sends comes back unchanged."""
    response = await client.get("/healthz", headers={"X-Request-ID": "req-2024.07:abc"})

    assert response.headers["x-request-id"] == "req-2024.07:abc"


@pytest.mark.parametrize("sent", [None, "", "has space", "line\nbreak", "x" * 129], ids=repr)
async def test_a_missing_or_unsafe_request_id_is_replaced_by_a_fresh_one(
    client: httpx.AsyncClient, sent: str | None
) -> None:
    """Without a usable ``X-Request-ID`` the answer carries a fresh 32-hex-digit id."""
    headers = {} if sent is None else {"X-Request-ID": sent}
    first = await client.get("/healthz", headers=headers)
    second = await client.get("/healthz", headers=headers)

    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert ids[0] != ids[1]


async def test_refused_and_unknown_requests_carry_a_request_id_too(
    client: httpx.AsyncClient,
) -> None:
    """A 413 (body too large) and a 404 answer with the request id like any other."""
    too_large = await client.post("/orders", content=b"x" * (1024 * 1024 + 1))
    unknown = await client.get("/orders/nosuchorder", headers={"X-Request-ID": "r-404"})

    assert too_large.status_code == 413
    assert re.fullmatch(r"[0-9a-f]{32}", too_large.headers["x-request-id"])
    assert unknown.status_code == 404
    assert unknown.headers["x-request-id"] == "r-404"


async def test_a_checkouts_lines_carry_its_request_id_saga_step_and_attempt(
    client: httpx.AsyncClient, json_lines: Lines
) -> None:
    """order3's checkout logs each transition and each compensation under its request id."""
    response = await client.post("/checkout/order3", headers={"X-Request-ID": "req-42"})
    saga_id = response.json()["saga_id"]

    lines = [line for line in json_lines() if line.get("saga_id") == saga_id]

    events = [line["event"] for line in lines]
    for expected in (
        "saga_started",
        "step_failed",
        "compensation_started",
        "stock_released",
        "payment_refunded",
        "saga_compensated",
    ):
        assert expected in events
    assert {line["request_id"] for line in lines} == {"req-42"}
    refund = next(line for line in lines if line["event"] == "payment_refunded")
    assert (refund["step"], refund["attempt"], refund["amount"], refund["user_id"]) == (
        "payment",
        1,
        10,
        "user1",
    )
    failed = next(line for line in lines if line["event"] == "step_failed")
    assert (failed["step"], failed["detail"]) == ("shipping", "Invalid shipping address")
