"""The AMQP steps' view of the outbox: a waiting step is woken by its reply, or times out."""

from __future__ import annotations

import asyncio

import pytest

from sagakit.records import JSON, JSONObject
from sagakit.saga import StepContext
from sagakit.store import MemoryStore
from sagakit.transports.amqp.outbox import Outbox, ReplyTimeout
from sagakit.transports.amqp.steps import AmqpStep


async def test_a_waiting_step_is_woken_by_the_first_delivery_of_its_reply() -> None:
    """The first delivery wins and wakes the waiter; no reply is a ReplyTimeout."""
    outbox = Outbox(MemoryStore())
    waiting = asyncio.create_task(outbox.wait_reply("s1", "payment.charge", 5.0))
    await asyncio.sleep(0.05)
    assert await outbox.add_reply("s1", "payment.charge", {"outcome": "ok", "n": 1})
    assert not await outbox.add_reply("s1", "payment.charge", {"outcome": "ok", "n": 2})
    assert (await asyncio.wait_for(waiting, 2.0))["n"] == 1
    with pytest.raises(ReplyTimeout):
        await outbox.wait_reply("s1", "payment.refund", 0.1)


async def test_a_reply_stored_by_another_process_is_found_by_polling() -> None:
    """A reply written straight to the store (another process's consumer) is found soon."""
    store = MemoryStore()
    outbox = Outbox(store)
    waiting = asyncio.create_task(outbox.wait_reply("s1", "payment.charge", 5.0))
    await asyncio.sleep(0.05)
    await store.add_reply("s1", "payment.charge", {"outcome": "ok"})
    assert await asyncio.wait_for(waiting, 1.0) == {"outcome": "ok"}


def _context(saga_id: str) -> StepContext[JSONObject, JSON]:
    return StepContext(
        saga_id=saga_id,
        saga_name="checkout",
        step="payment",
        input={},
        results={},
        idempotency_key=f"{saga_id}:payment",
        attempt=1,
    )


async def test_a_command_published_late_still_gets_a_whole_reply_window() -> None:
    """RabbitMQ unreachable at first: the command goes out late in a reply window of the
    step (0.9 s, the window ending at 1.0 s) and its reply comes 0.25 s after that. The
    step gets its reply: it gives up only ``wait`` seconds after the command went out, not
    at the end of a window mostly spent before it did (a try used up by the outage)."""
    store = MemoryStore()
    outbox = Outbox(store)
    loop = asyncio.get_running_loop()
    started = loop.time()
    published_at = started + 0.9

    async def published(saga_id: str, step: str, kind: str) -> bool:
        return loop.time() >= published_at

    outbox.published = published  # type: ignore[method-assign]  # the relay's progress
    step = AmqpStep(
        outbox, name="payment", action="charge", undo="refund", body=lambda ctx: {}, wait=0.5
    )

    async def participant() -> None:
        await asyncio.sleep(published_at + 0.25 - loop.time())
        await outbox.add_reply("s1", "payment.charge", {"outcome": "ok", "result": "paid"})

    replying = asyncio.create_task(participant())
    assert await asyncio.wait_for(step.do(_context("s1")), 5.0) == "paid"
    await replying


async def test_a_published_command_without_a_reply_times_out_after_one_window() -> None:
    """Published at once and never answered: ``ReplyTimeout`` after ``wait``, not later."""
    outbox = Outbox(MemoryStore())

    async def published(saga_id: str, step: str, kind: str) -> bool:
        return True

    outbox.published = published  # type: ignore[method-assign]  # published at once
    step = AmqpStep(
        outbox, name="payment", action="charge", undo="refund", body=lambda ctx: {}, wait=0.3
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ReplyTimeout):
        await step.do(_context("s1"))
    assert 0.3 <= loop.time() - started < 0.6
