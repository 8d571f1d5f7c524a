"""The AMQP transport's outbox and reply tables, on SQLite and PostgreSQL (no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sagakit.participants.amqp import Outbox, ReplyTimeout
from sagakit.store import open_store
from sagakit.store.base import SagaStore


@pytest.fixture(params=["sqlite", "postgres"])
async def saga_store(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[SagaStore]:
    """A fresh SQLite or PostgreSQL saga store."""
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = await open_store(url)
    try:
        yield store
    finally:
        await store.close()


async def test_commands_wait_in_the_outbox_until_marked_sent(saga_store: SagaStore) -> None:
    """Unsent commands come oldest first with their body; sent ones no longer do."""
    outbox = Outbox(saga_store)
    await outbox.add_command("s1", "payment", "s1:payment", "charge", {"amount": 20})
    await outbox.add_command("s1", "payment", "s1:payment", "refund", {})
    rows = await outbox.unsent()
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        ("s1", "payment", "s1:payment", "charge"),
        ("s1", "payment", "s1:payment", "refund"),
    ]
    assert '"amount"' in rows[0][5]
    await outbox.mark_sent([rows[0][0]])
    assert [r[4] for r in await outbox.unsent()] == ["refund"]


async def test_a_reply_is_stored_once_and_found_by_its_waiter(saga_store: SagaStore) -> None:
    """The first delivery wins; a waiter is woken by it; no reply is a ReplyTimeout."""
    outbox = Outbox(saga_store)
    waiting = asyncio.create_task(outbox.wait_reply("s1", "payment.charge", 5.0))
    await asyncio.sleep(0.05)
    assert await outbox.add_reply("s1", "payment.charge", {"outcome": "ok", "n": 1})
    assert not await outbox.add_reply("s1", "payment.charge", {"outcome": "ok", "n": 2})
    assert (await asyncio.wait_for(waiting, 2.0))["n"] == 1
    assert await outbox.reply("s1", "payment.charge") == {"outcome": "ok", "n": 1}
    with pytest.raises(ReplyTimeout):
        await outbox.wait_reply("s1", "payment.refund", 0.1)
