"""The AMQP transport's outbox and reply tables, on SQLite and PostgreSQL (no broker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from sagakit.errors import StepFailed
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, JSONObject, OutboxMessage, SagaEvent, SagaStatus
from sagakit.saga import Saga, Step, StepContext, step
from sagakit.store import open_store
from sagakit.store.base import SagaStore
from sagakit.transports.amqp.outbox import Outbox, ReplyTimeout


@pytest.fixture(params=["sqlite", "postgres"])
async def saga_store(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[SagaStore]:
    """A fresh SQLite or PostgreSQL saga store."""
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = await open_store(url)
    try:
        yield store
    finally:
        await store.close()


class Charge(Step):
    """A step whose attempt sends ``charge`` and whose compensation sends ``refund``."""

    name = "payment"

    def outgoing(self, ctx: StepContext, *, compensation: bool) -> OutboxMessage:
        body: JSONObject = {} if compensation else {"amount": 20}
        kind = "refund" if compensation else "charge"
        return OutboxMessage(step=self.name, key=ctx.idempotency_key, kind=kind, body=body)

    async def do(self, ctx: StepContext) -> JSON:
        return None


@step("refuse")
async def refuse(ctx: StepContext) -> JSON:
    raise StepFailed("no")


async def test_commands_wait_in_the_outbox_until_marked_sent(saga_store: SagaStore) -> None:
    """The commands a saga's transitions recorded come oldest first; sent ones no longer do."""
    orch = SagaOrchestrator(saga_store, [Saga("pay", [Charge(), refuse])])
    started = await orch.start("pay", {})
    saga_id = started.instance.saga_id
    await orch.wait(saga_id, timeout=10.0)
    await orch.shutdown()
    outbox = Outbox(saga_store)

    rows = await outbox.unsent()

    key = f"{saga_id}:payment"
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        (saga_id, "payment", key, "charge"),
        (saga_id, "payment", key, "refund"),
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


async def test_pruning_deletes_old_sent_commands_and_old_replies_of_ended_sagas(
    saga_store: SagaStore,
) -> None:
    """Unsent commands, recent rows and the replies of sagas still active are kept."""
    orch = SagaOrchestrator(saga_store, [Saga("pay", [Charge(), refuse])])
    ended = await orch.start("pay", {})
    await orch.wait(ended.instance.saga_id, timeout=10.0)
    await orch.shutdown()
    outbox = Outbox(saga_store)
    charge, refund = await outbox.unsent()
    await outbox.mark_sent([charge[0]])
    await outbox.add_reply(ended.instance.saga_id, "payment.charge", {"outcome": "ok"})
    await outbox.add_reply("still-running", "payment.charge", {"outcome": "ok"})
    await saga_store.start(
        replace(ended.instance, saga_id="still-running", status=SagaStatus.RUNNING),
        SagaEvent(type="saga_started"),
        lease_seconds=60,
    )

    assert await outbox.prune(time.time() - 60) == (0, 0)
    assert await outbox.prune(time.time() + 1) == (1, 1)

    assert [r[0] for r in await outbox.unsent()] == [refund[0]]
    assert await outbox.reply(ended.instance.saga_id, "payment.charge") is None
    assert await outbox.reply("still-running", "payment.charge") == {"outcome": "ok"}


async def test_a_relay_takes_its_own_sagas_commands_at_once_and_others_when_late(
    saga_store: SagaStore,
) -> None:
    """Two processes' relays do not both publish a fresh command; a late one is anybody's."""
    orch = SagaOrchestrator(saga_store, [Saga("pay", [Charge()])])
    done = await orch.start("pay", {})
    await orch.wait(done.instance.saga_id, timeout=10.0)
    await orch.shutdown()
    for saga_id, owner in (("mine", "me"), ("theirs", "them")):
        message = OutboxMessage(step="payment", key=f"{saga_id}:payment", kind="charge", body={})
        await saga_store.start(
            replace(done.instance, saga_id=saga_id, owner=owner, status=SagaStatus.RUNNING),
            SagaEvent(type="saga_started"),
            lease_seconds=60,
            outbox=(message,),
        )
    outbox = Outbox(saga_store)

    def sagas(rows: list[tuple[int, str, str, str, str, str]]) -> list[str]:
        return [row[1] for row in rows]

    assert sagas(await outbox.unsent(owner="me", before=time.time() - 60)) == ["mine"]
    assert sagas(await outbox.unsent(owner="them", before=time.time() - 60)) == ["theirs"]
    late = sagas(await outbox.unsent(owner="me", before=time.time() + 1))
    assert late == [done.instance.saga_id, "mine", "theirs"]
    assert len(await outbox.unsent()) == 3
