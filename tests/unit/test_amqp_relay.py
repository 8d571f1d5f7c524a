"""The outbox relay: a publish that never returns does not stop it for good."""

from __future__ import annotations

import asyncio

from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, OutboxMessage
from sagakit.saga import Saga, Step, StepContext
from sagakit.settings import Settings
from sagakit.store import MemoryStore
from sagakit.transports.amqp.relay import AmqpRelay


class Charge(Step):
    """A step whose attempt records a ``charge`` command in the outbox."""

    name = "payment"

    def outgoing(self, ctx: StepContext, *, compensation: bool) -> OutboxMessage:
        return OutboxMessage(step=self.name, key=ctx.idempotency_key, kind="charge", body={})

    async def do(self, ctx: StepContext) -> JSON:
        return None


class StuckOnce:
    """A channel (and its default exchange) whose first publish never returns, as aiormq's
    does when the connection dies while the publish waits for room in the connection's
    full write queue (the writer that would make room is gone; nothing wakes it)."""

    def __init__(self) -> None:
        self.default_exchange = self
        self.calls = 0
        self.published: list[str] = []

    async def publish(self, message: object, routing_key: str) -> None:
        self.calls += 1
        if self.calls == 1:
            await asyncio.get_running_loop().create_future()  # for ever
        self.published.append(routing_key)


async def test_a_publish_that_never_returns_is_given_up_and_the_command_sent_again() -> None:
    """The relay bounds each publish: one hung on a dead connection (whose commands would
    otherwise never go out, every step waiting for ever for its reply) fails after
    ``publish_seconds`` and the command goes out again on the next round."""
    store = MemoryStore()
    orch = SagaOrchestrator(store, [Saga("pay", [Charge()])])
    started = await orch.start("pay", {})
    saga_id = started.instance.saga_id
    await orch.wait(saga_id, timeout=5.0)
    await orch.shutdown()
    relay = AmqpRelay(Settings(), store, ["payment"])
    relay.publish_seconds = 0.1
    channel = StuckOnce()
    relaying = asyncio.create_task(relay._relay(channel))  # type: ignore[arg-type]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        while not await store.outbox_published(saga_id, "payment", "charge"):
            assert loop.time() < deadline, "the relay is stuck on a publish that never returns"
            await asyncio.sleep(0.02)
    finally:
        relaying.cancel()
        await asyncio.gather(relaying, return_exceptions=True)
    assert channel.calls == 2
    assert channel.published == [f"{Settings().amqp_prefix}.payment.commands"]
