"""The HTTP transport: steps that call a participant service.

Each step POSTs its command with the step's idempotency key in an ``Idempotency-Key``
header. ``200`` is the result; ``409`` or ``422`` is a business refusal
(:class:`~sagakit.errors.StepFailed`: the participant applied nothing); any other status,
a timeout or a connection error raises :class:`ParticipantUnavailable`, which the step's
``RetryPolicy`` retries with the same key, and the participant's inbox makes the retry
apply the effect at most once. Compensations go the same way and never refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import httpx

from sagakit.errors import SagakitError, StepFailed
from sagakit.records import JSON, JSONObject
from sagakit.retry import RetryPolicy
from sagakit.saga import Step, StepContext

#: A participant that is down (killed, restarting) is tried for about ten seconds before
#: the step's outcome counts as unknown and the saga compensates.
HTTP_RETRY: Final = RetryPolicy(max_attempts=8, initial_delay=0.2, max_delay=2.0)
REFUSALS: Final = (409, 422)


class ParticipantUnavailable(SagakitError):
    """A participant did not answer, or answered neither a result nor a refusal."""


class HttpStep(Step):
    """A step whose action and compensation are commands to one participant service."""

    retry = HTTP_RETRY

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        name: str,
        action_url: str,
        compensation_url: str,
        body: Callable[[StepContext], JSONObject],
        timeout: float,
    ) -> None:
        self.name = name
        self.client = client
        self.action_url = action_url
        self.compensation_url = compensation_url
        self.body = body
        self.timeout = timeout

    async def do(self, ctx: StepContext) -> JSON:
        """Send the action; its answer is the step's result."""
        response = await self._post(self.action_url, ctx, self.body(ctx))
        if response.status_code in REFUSALS:
            raise StepFailed(error_of(response))
        answer: JSON = response.json()
        return answer

    async def compensate(self, ctx: StepContext) -> None:
        """Send the compensation (a no-op, leaving a tombstone, if the action never came)."""
        response = await self._post(self.compensation_url, ctx, {})
        if response.status_code != 200:
            raise ParticipantUnavailable(f"{self.compensation_url} answered {response}")

    async def _post(self, url: str, ctx: StepContext, body: JSONObject) -> httpx.Response:
        headers = {"Idempotency-Key": ctx.idempotency_key}
        try:
            response = await self.client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ParticipantUnavailable(f"{url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200 and response.status_code not in REFUSALS:
            raise ParticipantUnavailable(f"{url} answered {response.status_code}")
        return response


def error_of(response: httpx.Response) -> str:
    """The ``error`` a refusal carries, or a stand-in naming its status."""
    try:
        error = response.json().get("error")
    except ValueError:
        error = None
    return str(error or f"refused ({response.status_code})")
