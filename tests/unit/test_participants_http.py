"""The HTTP steps' mapping of participant answers to results, refusals and faults."""

from __future__ import annotations

import httpx
import pytest

from sagakit.errors import StepFailed
from sagakit.saga import StepContext
from sagakit.service.remote import http_saga
from sagakit.settings import Settings
from sagakit.transports.http import HttpStep, ParticipantUnavailable

CONTEXT: StepContext = StepContext(
    saga_id="s1",
    saga_name="checkout",
    step="payment",
    input={"order_id": "o1", "user_id": "u1", "items": {"i1": 2}, "address": "A", "total": 20},
    results={},
    idempotency_key="s1:payment",
    attempt=1,
)


def payment_step(handler: httpx.MockTransport) -> tuple[HttpStep, httpx.AsyncClient]:
    """The payment step of the checkout over HTTP, reaching ``handler`` (close the client)."""
    settings = Settings(payment_url="http://127.0.0.1:8001")
    client = httpx.AsyncClient(transport=handler)
    step = http_saga(client, settings).steps[0]
    assert isinstance(step, HttpStep)
    return step, client


async def test_ok_answer_is_the_result_and_the_request_carries_the_key() -> None:
    """A 200 answer is the step's result; the request had the key header and the body."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"payment_id": "s1:payment", "amount": 20})

    step, client = payment_step(httpx.MockTransport(answer))
    try:
        result = await step.do(CONTEXT)
    finally:
        await client.aclose()

    assert result == {"payment_id": "s1:payment", "amount": 20}
    assert seen[0].url == "http://127.0.0.1:8001/payment/charge"
    assert seen[0].headers["Idempotency-Key"] == "s1:payment"
    assert seen[0].content == b'{"user_id":"u1","amount":20}'


async def test_conflict_answer_is_a_business_refusal_with_its_message() -> None:
    """A 409 answer raises StepFailed with the participant's error message."""
    refuse = httpx.MockTransport(
        lambda _: httpx.Response(409, json={"error": "Insufficient balance"})
    )
    step, client = payment_step(refuse)
    try:
        with pytest.raises(StepFailed, match="Insufficient balance"):
            await step.do(CONTEXT)
    finally:
        await client.aclose()


@pytest.mark.parametrize("status", [500, 503, 404])
async def test_other_statuses_are_transient_faults(status: int) -> None:
    """Any status but 200, 409 and 422 raises ParticipantUnavailable, to be retried."""
    step, client = payment_step(httpx.MockTransport(lambda _: httpx.Response(status)))
    try:
        with pytest.raises(ParticipantUnavailable):
            await step.do(CONTEXT)
        with pytest.raises(ParticipantUnavailable):
            await step.compensate(CONTEXT)
    finally:
        await client.aclose()


async def test_connection_error_is_a_transient_fault() -> None:
    """A connection that fails raises ParticipantUnavailable rather than StepFailed."""

    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    step, client = payment_step(httpx.MockTransport(fail))
    try:
        with pytest.raises(ParticipantUnavailable, match="ConnectError"):
            await step.do(CONTEXT)
    finally:
        await client.aclose()


async def test_compensation_posts_the_same_key_to_the_undo_endpoint() -> None:
    """The compensation sends the action's key to /payment/refund and accepts 200."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"undone": True})

    step, client = payment_step(httpx.MockTransport(answer))
    try:
        await step.compensate(CONTEXT)
    finally:
        await client.aclose()

    assert seen[0].url.path == "/payment/refund"
    assert seen[0].headers["Idempotency-Key"] == "s1:payment"
