"""The outbox and the replies (``MessageStore``), on every backend: what a relay and a step see."""

from __future__ import annotations

import time
from dataclasses import replace

import orjson

from sagakit.errors import StepFailed
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, JSONObject, OutboxMessage, SagaEvent, SagaStatus
from sagakit.saga import Saga, Step, StepContext, step
from sagakit.store.base import OutboxRow, SagaStore


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


async def test_commands_wait_in_the_outbox_oldest_first_until_marked_sent(store: SagaStore) -> None:
    """The commands a saga's transitions recorded come oldest first; sent ones no longer do."""
    orch = SagaOrchestrator(store, [Saga("pay", [Charge(), refuse])])
    started = await orch.start("pay", {})
    saga_id = started.instance.saga_id
    await orch.wait(saga_id, timeout=10.0)
    await orch.shutdown()

    rows = await store.outbox_unsent()

    key = f"{saga_id}:payment"
    assert [(r.saga_id, r.step, r.key, r.kind) for r in rows] == [
        (saga_id, "payment", key, "charge"),
        (saga_id, "payment", key, "refund"),
    ]
    assert orjson.loads(rows[0].body) == {"amount": 20}
    assert not await store.outbox_published(saga_id, "payment", "charge")
    await store.outbox_mark_sent([rows[0].id])
    assert [r.kind for r in await store.outbox_unsent()] == ["refund"]
    assert await store.outbox_published(saga_id, "payment", "charge")
    assert not await store.outbox_published(saga_id, "payment", "refund")


async def test_a_reply_is_kept_once_and_the_first_delivery_wins(store: SagaStore) -> None:
    """A second delivery of the same (saga, name) changes nothing; another name is apart."""
    assert await store.reply("s1", "payment.charge") is None
    assert await store.add_reply("s1", "payment.charge", {"outcome": "ok", "n": 1})
    assert not await store.add_reply("s1", "payment.charge", {"outcome": "ok", "n": 2})
    assert await store.reply("s1", "payment.charge") == {"outcome": "ok", "n": 1}
    assert await store.reply("s1", "payment.refund") is None
    assert await store.reply("s2", "payment.charge") is None


async def test_pruning_deletes_old_sent_commands_and_old_replies_of_ended_sagas(
    store: SagaStore,
) -> None:
    """Unsent commands, recent rows and the replies of sagas still active are kept."""
    orch = SagaOrchestrator(store, [Saga("pay", [Charge(), refuse])])
    ended = await orch.start("pay", {})
    await orch.wait(ended.instance.saga_id, timeout=10.0)
    await orch.shutdown()
    charge, refund = await store.outbox_unsent()
    await store.outbox_mark_sent([charge.id])
    await store.add_reply(ended.instance.saga_id, "payment.charge", {"outcome": "ok"})
    await store.add_reply("still-running", "payment.charge", {"outcome": "ok"})
    await store.start(
        replace(ended.instance, saga_id="still-running", status=SagaStatus.RUNNING),
        SagaEvent(type="saga_started"),
        lease_seconds=60,
    )

    assert await store.prune_messages(time.time() - 60) == (0, 0)
    assert await store.prune_messages(time.time() + 1) == (1, 1)

    assert [r.id for r in await store.outbox_unsent()] == [refund.id]
    assert await store.reply(ended.instance.saga_id, "payment.charge") is None
    assert await store.reply("still-running", "payment.charge") == {"outcome": "ok"}


async def test_a_relay_takes_its_own_sagas_commands_at_once_and_others_when_late(
    store: SagaStore,
) -> None:
    """Two processes' relays do not both publish a fresh command; a late one is anybody's."""
    orch = SagaOrchestrator(store, [Saga("pay", [Charge()])])
    done = await orch.start("pay", {})
    await orch.wait(done.instance.saga_id, timeout=10.0)
    await orch.shutdown()
    for saga_id, owner in (("mine", "me"), ("theirs", "them")):
        message = OutboxMessage(step="payment", key=f"{saga_id}:payment", kind="charge", body={})
        await store.start(
            replace(done.instance, saga_id=saga_id, owner=owner, status=SagaStatus.RUNNING),
            SagaEvent(type="saga_started"),
            lease_seconds=60,
            outbox=(message,),
        )

    def sagas(rows: list[OutboxRow]) -> list[str]:
        return [row.saga_id for row in rows]

    assert sagas(await store.outbox_unsent(owner="me", before=time.time() - 60)) == ["mine"]
    assert sagas(await store.outbox_unsent(owner="them", before=time.time() - 60)) == ["theirs"]
    late = sagas(await store.outbox_unsent(owner="me", before=time.time() + 1))
    assert late == [done.instance.saga_id, "mine", "theirs"]
    assert len(await store.outbox_unsent()) == 3
    assert sagas(await store.outbox_unsent(2)) == [done.instance.saga_id, "mine"]
