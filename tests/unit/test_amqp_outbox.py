"""The AMQP steps' view of the outbox: a waiting step is woken by its reply, or times out."""

from __future__ import annotations

import asyncio

import pytest

from sagakit.store import MemoryStore
from sagakit.transports.amqp.outbox import Outbox, ReplyTimeout


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
