"""Steps over AMQP: each command goes out through the outbox; the step waits for its reply."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sagakit.errors import StepFailed
from sagakit.records import JSON, JSONObject, OutboxMessage
from sagakit.retry import RetryPolicy
from sagakit.saga import Step, StepContext
from sagakit.transports.amqp.outbox import Outbox, ReplyTimeout

#: A step whose reply does not come is tried again (same key) this many times in all.
AMQP_RETRY: Final = RetryPolicy(max_attempts=6, initial_delay=0.2, max_delay=2.0)


class AmqpStep(Step):
    """A step whose action and compensation are commands sent through the outbox.

    The command is the step's outgoing message: the orchestrator writes it to the outbox
    in the transaction that records the attempt, so no attempt is recorded without its
    command, and no command exists for an attempt that was not recorded. ``do`` and
    ``compensate`` only wait for the reply.
    """

    retry = AMQP_RETRY

    def __init__(
        self,
        outbox: Outbox,
        *,
        name: str,
        action: str,
        undo: str,
        body: Callable[[StepContext], JSONObject],
        wait: float,
    ) -> None:
        self.name = name
        self.outbox = outbox
        self.action = action
        self.undo = undo
        self.body = body
        self.wait = wait
        # No limit on an attempt as a whole: ``_reply`` bounds each wait for a published
        # command, and waits for as long as RabbitMQ cannot even be reached.
        self.timeout = None

    def outgoing(self, ctx: StepContext, *, compensation: bool) -> OutboxMessage:
        """The command of this attempt: the action, or (``compensation``) its undoing."""
        body = {} if compensation else self.body(ctx)
        return OutboxMessage(
            step=self.name,
            key=ctx.idempotency_key,
            kind=self.undo if compensation else self.action,
            body={**body, "attempt": ctx.attempt},
        )

    async def _reply(self, ctx: StepContext, kind: str) -> JSONObject:
        """The reply to this attempt's command (or an earlier attempt's: same key).

        ``ReplyTimeout`` (the step tries again) once the participant had ``wait`` seconds
        to answer the published command; while it was not published (RabbitMQ
        unreachable), it keeps waiting: an outage is not the participant's failure, and
        should not use up the step's tries and turn the saga backward. A command found
        published at the end of a window it was not published at the start of went out
        during it, perhaps a moment ago: it gets one more whole window.
        """
        # The command was committed with this attempt's record, just before: publish it now.
        self.outbox.added.set()
        name = f"{self.name}.{kind}"
        # Whether the command was out before the window that is running began; at first,
        # it is taken to be (the relay publishes at once while RabbitMQ answers).
        out_before = True
        while True:
            try:
                return await self.outbox.wait_reply(ctx.saga_id, name, self.wait)
            except ReplyTimeout:
                published = await self.outbox.published(ctx.saga_id, self.name, kind)
                if published and out_before:
                    raise
                out_before = published

    async def do(self, ctx: StepContext) -> JSON:
        """Wait for the action's reply; a refusal raises ``StepFailed``."""
        reply = await self._reply(ctx, self.action)
        if reply.get("outcome") == "refused":
            raise StepFailed(str(reply.get("error") or "refused"))
        return reply.get("result")

    async def compensate(self, ctx: StepContext) -> None:
        """Wait for the compensation's reply (raises, and is retried, without one)."""
        await self._reply(ctx, self.undo)
