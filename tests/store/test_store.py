"""The store contract: every backend behind the ``store`` fixture keeps these promises."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sagakit.errors import InvalidTransition, LeaseLost, SagakitError, SagaNotFound
from sagakit.records import (
    JSONObject,
    SagaEvent,
    SagaInstance,
    SagaStatus,
    StepRecord,
    StepStatus,
    Transition,
    now,
)
from sagakit.store import SagaStore
from sagakit.store.sqlite import SqliteStore

LIVE = 60.0  # seconds: a lease nobody may take over during a test
EXPIRED = -1.0  # seconds: a lease that ran out before anyone looked at it


def steps(*statuses: StepStatus) -> tuple[StepRecord, ...]:
    """Step rows named a, b, c, ... with the given statuses."""
    return tuple(
        StepRecord(
            index=i,
            name="abcdefgh"[i],
            status=status,
            attempts=0 if status is StepStatus.PENDING else 1,
        )
        for i, status in enumerate(statuses)
    )


def instance(
    saga_id: str,
    *,
    status: SagaStatus = SagaStatus.RUNNING,
    business_key: str | None = None,
    name: str = "order",
    owner: str | None = "owner-a",
    input: JSONObject | None = None,
    step_rows: tuple[StepRecord, ...] | None = None,
) -> SagaInstance:
    """A saga instance as the orchestrator hands it to ``start``."""
    return SagaInstance(
        saga_id=saga_id,
        name=name,
        version=1,
        status=status,
        input=input if input is not None else {"order_id": saga_id},
        steps=step_rows if step_rows is not None else steps(StepStatus.RUNNING, StepStatus.PENDING),
        business_key=business_key,
        owner=owner,
        fence=1,
    )


def started(step: str | None = "a") -> SagaEvent:
    """The event that records a saga's start."""
    return SagaEvent(type="saga_started", step=step, attempt=1)


async def put(store: SagaStore, saga: SagaInstance, *, lease_seconds: float = LIVE) -> SagaInstance:
    """Start ``saga`` in ``store`` and return what the store kept."""
    result = await store.start(saga, started(), lease_seconds=lease_seconds)
    assert result.created
    return result.instance


async def stored(store: SagaStore, saga_id: str) -> SagaInstance:
    """The instance ``saga_id`` as the store has it now (it must exist)."""
    found = await store.get(saga_id)
    assert found is not None, f"saga {saga_id} is missing"
    return found


# -- start and get ----------------------------------------------------------------------------


async def test_start_then_get_returns_the_input_steps_and_business_key(store: SagaStore) -> None:
    """What ``start`` stored comes back from ``get`` field for field."""
    payload: JSONObject = {
        "order_id": "o-1",
        "lines": [{"item": "item1", "qty": 2}, {"item": "item2", "qty": 1}],
        "total": 30,
        "gift": False,
        "note": None,
        "ratio": 0.5,
        "text": "Straße ✓",
    }
    rows = (
        StepRecord(index=0, name="payment", status=StepStatus.RUNNING, attempts=1, started_at=1.5),
        StepRecord(index=1, name="inventory"),
        StepRecord(index=2, name="shipping"),
    )
    before = now()
    result = await store.start(
        instance("s-1", business_key="o-1", input=payload, step_rows=rows),
        started("payment"),
        lease_seconds=30.0,
    )

    got = await stored(store, "s-1")
    assert result.created
    assert got.input == payload
    assert got.steps == rows
    assert got.business_key == "o-1"
    assert (got.name, got.version, got.status) == ("order", 1, SagaStatus.RUNNING)
    assert (got.owner, got.fence) == ("owner-a", 1)
    assert got.lease_until is not None
    assert before + 29.0 < got.lease_until < now() + 31.0
    assert result.instance.saga_id == "s-1"


async def test_start_records_its_event(store: SagaStore) -> None:
    """The start event is the first entry of the saga's history, with every field kept."""
    event = SagaEvent(type="saga_started", step="a", attempt=1, detail="hello", at=1234.5)
    await store.start(instance("s-1"), event, lease_seconds=LIVE)

    assert await store.events("s-1") == [event]


async def test_get_of_an_unknown_saga_returns_none(store: SagaStore) -> None:
    """Asking for an id nobody started gives ``None``, not an error."""
    await put(store, instance("s-1"))

    assert await store.get("nope") is None


async def test_start_with_a_taken_saga_id_is_refused_and_keeps_the_first(
    store: SagaStore,
) -> None:
    """A second instance cannot overwrite the first one's id."""
    await put(store, instance("s-1", input={"first": True}))

    with pytest.raises(SagakitError):
        await store.start(instance("s-1", input={"first": False}), started(), lease_seconds=LIVE)

    assert (await stored(store, "s-1")).input == {"first": True}
    assert len(await store.events("s-1")) == 1


async def test_start_with_a_taken_business_key_returns_the_existing_instance(
    store: SagaStore,
) -> None:
    """While the key's latest saga is active, completed or failed, no second one is created."""
    holding = [SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.COMPLETED, SagaStatus.FAILED]
    for status in holding:
        await put(store, instance(f"first-{status}", business_key=f"key-{status}", status=status))

    for status in holding:
        result = await store.start(
            instance(f"second-{status}", business_key=f"key-{status}"),
            started(),
            lease_seconds=LIVE,
        )

        assert not result.created, status
        assert result.instance.saga_id == f"first-{status}"
        assert result.instance.status is status
        assert await store.get(f"second-{status}") is None
    assert len((await store.list_sagas()).sagas) == len(holding)


async def test_start_with_a_key_whose_latest_saga_is_compensated_creates_a_new_one(
    store: SagaStore,
) -> None:
    """A compensated saga frees its business key for a new instance."""
    await put(store, instance("s-1", business_key="order-1", status=SagaStatus.COMPENSATED))

    result = await store.start(
        instance("s-2", business_key="order-1"), started(), lease_seconds=LIVE
    )

    assert result.created
    assert result.instance.saga_id == "s-2"
    assert (await stored(store, "s-2")).business_key == "order-1"
    latest = await store.latest_by_key("order", "order-1")
    assert latest is not None
    assert latest.saga_id == "s-2"


async def test_business_key_is_taken_only_within_one_saga_name(store: SagaStore) -> None:
    """The same key under another saga name starts a separate instance."""
    await put(store, instance("s-1", business_key="k", name="checkout"))

    result = await store.start(
        instance("s-2", business_key="k", name="refund"), started(), lease_seconds=LIVE
    )

    assert result.created
    assert result.instance.saga_id == "s-2"


async def test_concurrent_starts_with_one_business_key_create_exactly_one_instance(
    store: SagaStore,
) -> None:
    """Racing starts for one key all get the same single instance back."""
    results = await asyncio.gather(
        *(
            store.start(instance(f"s-{i}", business_key="order-1"), started(), lease_seconds=LIVE)
            for i in range(10)
        )
    )

    assert sum(r.created for r in results) == 1
    assert len({r.instance.saga_id for r in results}) == 1
    assert len((await store.list_sagas()).sagas) == 1


async def test_latest_by_key_returns_the_newest_instance_of_that_name_and_key(
    store: SagaStore,
) -> None:
    """Of several instances with one key, the one started last is the latest."""
    await put(store, instance("s-1", business_key="k", status=SagaStatus.COMPENSATED))
    await put(store, instance("s-2", business_key="k", status=SagaStatus.COMPENSATED))
    await put(store, instance("s-3", business_key="k"))
    await put(store, instance("s-4", business_key="other"))

    latest = await store.latest_by_key("order", "k")

    assert latest is not None
    assert latest.saga_id == "s-3"
    assert await store.latest_by_key("order", "unknown") is None
    assert await store.latest_by_key("refund", "k") is None


# -- transition -------------------------------------------------------------------------------


async def test_transition_applies_step_rows_events_and_status_together(store: SagaStore) -> None:
    """One transition overwrites the given step rows, appends its events and sets the status."""
    await put(store, instance("s-1", step_rows=steps(StepStatus.RUNNING, StepStatus.PENDING)))
    a_failed = StepRecord(
        index=0, name="a", status=StepStatus.FAILED, attempts=1, error="no", finished_at=9.0
    )
    events = (
        SagaEvent(type="step_failed", step="a", attempt=1, detail="no"),
        SagaEvent(type="saga_compensated", detail="no"),
    )

    await store.transition(
        Transition(
            saga_id="s-1",
            fence=1,
            status=SagaStatus.COMPENSATED,
            steps=(a_failed,),
            events=events,
            error="no",
            failed_step="a",
        )
    )

    got = await stored(store, "s-1")
    assert got.status is SagaStatus.COMPENSATED
    assert got.steps == (a_failed, StepRecord(index=1, name="b"))
    assert (got.error, got.failed_step) == ("no", "a")
    assert [e.type for e in await store.events("s-1")] == [
        "saga_started",
        "step_failed",
        "saga_compensated",
    ]


async def test_transition_stores_step_results_as_json(store: SagaStore) -> None:
    """A step's result comes back from the store equal to what was written."""
    await put(store, instance("s-1"))
    result: JSONObject = {"charge_id": "ch_1", "amount": 20, "parts": [1, 2.5, "x", None, True]}
    done = StepRecord(index=0, name="a", status=StepStatus.SUCCEEDED, attempts=1, result=result)

    await store.transition(
        Transition(saga_id="s-1", fence=1, status=SagaStatus.RUNNING, steps=(done,))
    )

    got = await stored(store, "s-1")
    assert got.steps[0].result == result
    assert got.results() == {"a": result}


async def test_transition_with_a_stale_fence_raises_lease_lost_and_changes_nothing(
    store: SagaStore,
) -> None:
    """A writer whose fence is not the instance's current one is refused entirely."""
    await put(store, instance("s-1"))
    before = await stored(store, "s-1")
    stale = Transition(
        saga_id="s-1",
        fence=0,
        status=SagaStatus.COMPLETED,
        steps=(StepRecord(index=0, name="a", status=StepStatus.SUCCEEDED, attempts=1),),
        events=(SagaEvent(type="saga_completed"),),
        release=True,
    )

    with pytest.raises(LeaseLost):
        await store.transition(stale)

    after = await stored(store, "s-1")
    assert after.status is SagaStatus.RUNNING
    assert after.steps == before.steps
    assert after.owner == "owner-a"
    assert [e.type for e in await store.events("s-1")] == ["saga_started"]


async def test_transition_time_becomes_the_instances_updated_at(store: SagaStore) -> None:
    """The instance's ``updated_at`` is the time its latest transition carries."""
    await put(store, instance("s-1"))

    await store.transition(
        Transition(saga_id="s-1", fence=1, status=SagaStatus.COMPENSATING, at=4321.5)
    )

    assert (await stored(store, "s-1")).updated_at == pytest.approx(4321.5)


async def test_transition_of_an_unknown_saga_raises_lease_lost(store: SagaStore) -> None:
    """Nobody can hold the lease of a saga that does not exist."""
    with pytest.raises(LeaseLost):
        await store.transition(Transition(saga_id="nope", fence=1, status=SagaStatus.RUNNING))


async def test_transition_with_release_clears_the_owner_and_lease(store: SagaStore) -> None:
    """The transition that finishes a saga gives up its lease."""
    await put(store, instance("s-1"))

    await store.transition(
        Transition(saga_id="s-1", fence=1, status=SagaStatus.COMPLETED, release=True)
    )

    got = await stored(store, "s-1")
    assert got.status is SagaStatus.COMPLETED
    assert (got.owner, got.lease_until) == (None, None)


async def test_transition_without_release_keeps_the_owner_and_lease(store: SagaStore) -> None:
    """An intermediate transition leaves the lease with its holder."""
    first = await put(store, instance("s-1"))

    await store.transition(Transition(saga_id="s-1", fence=1, status=SagaStatus.COMPENSATING))

    got = await stored(store, "s-1")
    assert got.status is SagaStatus.COMPENSATING
    assert got.owner == "owner-a"
    assert got.lease_until == pytest.approx(first.lease_until)


# -- claiming ---------------------------------------------------------------------------------


async def test_claim_of_a_saga_with_a_live_lease_returns_none(store: SagaStore) -> None:
    """A lease that has not run out cannot be taken over."""
    await put(store, instance("s-1"), lease_seconds=LIVE)

    assert await store.claim("s-1", owner="owner-b", lease_seconds=LIVE) is None
    assert (await stored(store, "s-1")).owner == "owner-a"


async def test_claim_of_an_expired_lease_hands_the_saga_over_and_bumps_the_fence(
    store: SagaStore,
) -> None:
    """Once the lease ran out, a claim makes the claimant the owner with a new fence."""
    await put(store, instance("s-1"), lease_seconds=EXPIRED)
    before = now()

    claimed = await store.claim("s-1", owner="owner-b", lease_seconds=30.0)

    assert claimed is not None
    assert (claimed.owner, claimed.fence) == ("owner-b", 2)
    assert claimed.lease_until is not None
    assert before + 29.0 < claimed.lease_until < now() + 31.0
    assert claimed.steps == (await stored(store, "s-1")).steps
    assert (await stored(store, "s-1")).fence == 2


async def test_claim_records_a_claimed_event(store: SagaStore) -> None:
    """A takeover shows in the saga's history, naming the new owner."""
    await put(store, instance("s-1"), lease_seconds=EXPIRED)

    await store.claim("s-1", owner="owner-b", lease_seconds=LIVE)

    events = await store.events("s-1")
    assert [e.type for e in events] == ["saga_started", "saga_claimed"]
    assert "owner-b" in (events[-1].detail or "")


async def test_claim_shortly_after_the_lease_ran_out_succeeds(store: SagaStore) -> None:
    """A lease of a few milliseconds expires in real time, and then the saga can be claimed."""
    await put(store, instance("s-1"), lease_seconds=0.05)
    assert await store.claim("s-1", owner="owner-b", lease_seconds=LIVE) is None

    await asyncio.sleep(0.1)

    claimed = await store.claim("s-1", owner="owner-b", lease_seconds=LIVE)
    assert claimed is not None
    assert claimed.owner == "owner-b"


async def test_claim_after_a_claim_is_refused_while_the_new_lease_lives(store: SagaStore) -> None:
    """The new owner's lease protects the saga from a third process."""
    await put(store, instance("s-1"), lease_seconds=EXPIRED)
    await store.claim("s-1", owner="owner-b", lease_seconds=LIVE)

    assert await store.claim("s-1", owner="owner-c", lease_seconds=LIVE) is None
    assert (await stored(store, "s-1")).owner == "owner-b"


async def test_concurrent_claims_hand_the_saga_to_exactly_one_owner(store: SagaStore) -> None:
    """Of racing claimants of one expired saga, one wins and the others get ``None``."""
    await put(store, instance("s-1"), lease_seconds=EXPIRED)

    claims = await asyncio.gather(
        *(store.claim("s-1", owner=f"owner-{i}", lease_seconds=LIVE) for i in range(8))
    )

    winners = [c for c in claims if c is not None]
    assert len(winners) == 1
    assert (await stored(store, "s-1")).owner == winners[0].owner
    assert (await stored(store, "s-1")).fence == 2


async def test_claim_of_a_finished_saga_returns_none(store: SagaStore) -> None:
    """Only running or compensating sagas can be claimed, whatever their lease."""
    finished = [SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED]
    for status in finished:
        await put(store, instance(f"s-{status}", status=status), lease_seconds=EXPIRED)

    for status in finished:
        assert await store.claim(f"s-{status}", owner="owner-b", lease_seconds=LIVE) is None
    assert await store.claim_expired(owner="owner-b", lease_seconds=LIVE, limit=10) == []
    for status in finished:
        assert (await stored(store, f"s-{status}")).fence == 1


async def test_claim_of_an_unknown_saga_returns_none(store: SagaStore) -> None:
    """Claiming an id nobody started is not an error."""
    assert await store.claim("nope", owner="owner-b", lease_seconds=LIVE) is None


async def test_claim_makes_the_previous_owners_fence_stale(store: SagaStore) -> None:
    """After a claim the old owner's writes raise ``LeaseLost`` and the new owner's succeed."""
    await put(store, instance("s-1"), lease_seconds=EXPIRED)
    claimed = await store.claim("s-1", owner="owner-b", lease_seconds=LIVE)
    assert claimed is not None

    with pytest.raises(LeaseLost):
        await store.transition(Transition(saga_id="s-1", fence=1, status=SagaStatus.COMPENSATING))
    await store.transition(
        Transition(saga_id="s-1", fence=claimed.fence, status=SagaStatus.COMPLETED, release=True)
    )

    assert (await stored(store, "s-1")).status is SagaStatus.COMPLETED


async def test_claim_expired_respects_its_limit_and_skips_live_and_finished_sagas(
    store: SagaStore,
) -> None:
    """Only active sagas with expired leases are taken, at most ``limit`` per call."""
    for saga_id in ("e-1", "e-2", "e-3"):
        await put(store, instance(saga_id), lease_seconds=EXPIRED)
    await put(store, instance("c-1", status=SagaStatus.COMPENSATING), lease_seconds=EXPIRED)
    await put(store, instance("live"), lease_seconds=LIVE)
    await put(store, instance("done", status=SagaStatus.COMPLETED), lease_seconds=EXPIRED)

    first = await store.claim_expired(owner="owner-b", lease_seconds=LIVE, limit=3)
    second = await store.claim_expired(owner="owner-b", lease_seconds=LIVE, limit=3)
    third = await store.claim_expired(owner="owner-b", lease_seconds=LIVE, limit=3)

    assert len(first) == 3
    assert len(second) == 1
    assert third == []
    taken = {i.saga_id for i in first + second}
    assert taken == {"e-1", "e-2", "e-3", "c-1"}
    assert all(i.owner == "owner-b" and i.fence == 2 for i in first + second)
    for saga_id in taken:
        assert (await stored(store, saga_id)).owner == "owner-b"
    assert (await stored(store, "live")).owner == "owner-a"
    assert (await stored(store, "done")).fence == 1


async def test_claim_expired_returns_instances_with_their_steps(store: SagaStore) -> None:
    """A claimed instance carries its step rows, so the claimant can resume it."""
    rows = steps(StepStatus.SUCCEEDED, StepStatus.RUNNING, StepStatus.PENDING)
    await put(store, instance("s-1", step_rows=rows), lease_seconds=EXPIRED)

    (claimed,) = await store.claim_expired(owner="owner-b", lease_seconds=LIVE, limit=10)

    assert claimed.steps == rows
    assert claimed.input == {"order_id": "s-1"}


async def test_claim_expired_with_definitions_takes_only_instances_of_those_versions(
    store: SagaStore,
) -> None:
    """Instances of a (name, version) not listed are left for a process that has it."""
    await put(store, instance("v1"), lease_seconds=EXPIRED)
    await put(store, instance("v2").evolve(saga_id="v2", version=2), lease_seconds=EXPIRED)
    await put(store, instance("p1", name="payment"), lease_seconds=EXPIRED)

    taken = await store.claim_expired(
        owner="owner-b", lease_seconds=LIVE, limit=10, definitions=[("order", 2), ("pay", 1)]
    )
    none = await store.claim_expired(owner="owner-b", lease_seconds=LIVE, limit=10, definitions=[])

    assert [i.saga_id for i in taken] == ["v2"]
    assert none == []
    assert (await stored(store, "v1")).fence == 1
    assert (await stored(store, "p1")).fence == 1


# -- leases: renew and release ----------------------------------------------------------------


async def test_renew_extends_only_the_owners_active_leases(store: SagaStore) -> None:
    """Renewal reaches every active saga of that owner, and nobody else's or finished ones."""
    await put(store, instance("mine-1"), lease_seconds=1.0)
    await put(store, instance("mine-2", status=SagaStatus.COMPENSATING), lease_seconds=EXPIRED)
    done = await put(store, instance("mine-done", status=SagaStatus.COMPLETED), lease_seconds=1.0)
    theirs = await put(store, instance("theirs", owner="owner-b"), lease_seconds=1.0)
    before = now()

    renewed = await store.renew(owner="owner-a", lease_seconds=100.0)

    assert renewed == 2
    for saga_id in ("mine-1", "mine-2"):
        lease = (await stored(store, saga_id)).lease_until
        assert lease is not None
        assert lease > before + 99.0
    assert (await stored(store, "theirs")).lease_until == pytest.approx(theirs.lease_until)
    assert (await stored(store, "mine-done")).lease_until == pytest.approx(done.lease_until)


async def test_renew_with_saga_ids_extends_only_those_leases(store: SagaStore) -> None:
    """Given ids, renewal skips the owner's other sagas, so their leases can lapse."""
    await put(store, instance("driven"), lease_seconds=EXPIRED)
    await put(store, instance("orphan"), lease_seconds=EXPIRED)
    await put(store, instance("theirs", owner="owner-b"), lease_seconds=EXPIRED)

    renewed = await store.renew(
        owner="owner-a", lease_seconds=LIVE, saga_ids=["driven", "theirs", "unknown"]
    )

    assert renewed == 1
    claimed = await store.claim_expired(owner="owner-c", lease_seconds=LIVE, limit=10)
    assert {i.saga_id for i in claimed} == {"orphan", "theirs"}
    assert (await stored(store, "driven")).owner == "owner-a"


async def test_renew_keeps_a_renewed_saga_from_being_claimed(store: SagaStore) -> None:
    """An expired lease that its owner renews in time cannot be taken over."""
    await put(store, instance("s-1"), lease_seconds=EXPIRED)

    await store.renew(owner="owner-a", lease_seconds=LIVE)

    assert await store.claim_expired(owner="owner-b", lease_seconds=LIVE, limit=10) == []


async def test_renew_of_an_owner_without_sagas_returns_zero(store: SagaStore) -> None:
    """Renewing for an owner that holds nothing changes nothing."""
    await put(store, instance("s-1"))

    assert await store.renew(owner="nobody", lease_seconds=LIVE) == 0


async def test_release_gives_up_every_lease_of_that_owner_only(store: SagaStore) -> None:
    """After a graceful shutdown the owner's sagas are free at once; others keep theirs."""
    await put(store, instance("mine-1"))
    await put(store, instance("mine-2", status=SagaStatus.COMPENSATING))
    await put(store, instance("theirs", owner="owner-b"))

    released = await store.release(owner="owner-a")

    assert released == 2
    for saga_id in ("mine-1", "mine-2"):
        got = await stored(store, saga_id)
        assert (got.owner, got.lease_until) == (None, None)
    assert (await stored(store, "theirs")).owner == "owner-b"
    claimed = await store.claim_expired(owner="owner-c", lease_seconds=LIVE, limit=10)
    assert {i.saga_id for i in claimed} == {"mine-1", "mine-2"}


# -- reopen -----------------------------------------------------------------------------------


async def test_reopen_turns_a_failed_saga_back_to_compensating_for_the_new_owner(
    store: SagaStore,
) -> None:
    """An operator's retry hands the failed saga to the caller with a fresh fence and lease."""
    rows = (
        StepRecord(
            index=0,
            name="a",
            status=StepStatus.COMPENSATING,
            attempts=1,
            compensation_attempts=5,
            result={"charge": "ch_1"},
            error="refund down",
        ),
        StepRecord(
            index=1, name="b", status=StepStatus.COMPENSATED, attempts=1, compensation_attempts=2
        ),
        StepRecord(index=2, name="c", status=StepStatus.FAILED, attempts=1, error="no"),
    )
    await put(store, instance("s-1", status=SagaStatus.FAILED, step_rows=rows, owner=None))
    event = SagaEvent(type="operator_retry", detail="retry requested by alice")

    reopened = await store.reopen("s-1", event, owner="owner-b", lease_seconds=LIVE)

    got = await stored(store, "s-1")
    assert reopened.status is SagaStatus.COMPENSATING
    assert (reopened.owner, reopened.fence) == ("owner-b", 2)
    assert reopened.lease_until is not None
    assert reopened.lease_until > now() + LIVE - 5
    assert [s.compensation_attempts for s in reopened.steps] == [0, 2, 0]
    assert reopened.steps[0].result == {"charge": "ch_1"}
    assert got.status is SagaStatus.COMPENSATING
    assert got.steps == reopened.steps
    assert (got.owner, got.fence) == ("owner-b", 2)
    assert (await store.events("s-1"))[-1] == event


async def test_reopen_of_a_saga_that_has_not_failed_raises_invalid_transition(
    store: SagaStore,
) -> None:
    """Only a ``failed`` saga can be reopened, and a refused reopen changes nothing."""
    others = [
        SagaStatus.RUNNING,
        SagaStatus.COMPENSATING,
        SagaStatus.COMPLETED,
        SagaStatus.COMPENSATED,
    ]
    for status in others:
        await put(store, instance(f"s-{status}", status=status))

    for status in others:
        saga_id = f"s-{status}"
        with pytest.raises(InvalidTransition):
            await store.reopen(
                saga_id, SagaEvent(type="operator_retry"), owner="b", lease_seconds=LIVE
            )

        got = await stored(store, saga_id)
        assert (got.status, got.owner, got.fence) == (status, "owner-a", 1)
        assert [e.type for e in await store.events(saga_id)] == ["saga_started"]


async def test_reopen_of_an_unknown_saga_raises_saga_not_found(store: SagaStore) -> None:
    """Reopening an id nobody started says so."""
    with pytest.raises(SagaNotFound):
        await store.reopen("nope", SagaEvent(type="operator_retry"), owner="b", lease_seconds=LIVE)


# -- listing and counting ---------------------------------------------------------------------


async def test_list_sagas_returns_newest_first(store: SagaStore) -> None:
    """The listing puts the most recently started saga first."""
    for i in range(4):
        await put(store, instance(f"s-{i}"))

    page = await store.list_sagas()

    assert [s.saga_id for s in page.sagas] == ["s-3", "s-2", "s-1", "s-0"]
    assert page.next_cursor is None


async def test_list_sagas_of_an_empty_store_is_an_empty_last_page(store: SagaStore) -> None:
    """With nothing stored the listing is empty and has no next page."""
    page = await store.list_sagas()

    assert page.sagas == ()
    assert page.next_cursor is None


async def test_list_sagas_filters_by_status(store: SagaStore) -> None:
    """A status filter returns only sagas in that status, newest first."""
    statuses = [SagaStatus.COMPLETED, SagaStatus.RUNNING, SagaStatus.COMPLETED, SagaStatus.FAILED]
    for i, status in enumerate(statuses):
        await put(store, instance(f"s-{i}", status=status))

    completed = await store.list_sagas(status=SagaStatus.COMPLETED)
    compensating = await store.list_sagas(status=SagaStatus.COMPENSATING)

    assert [s.saga_id for s in completed.sagas] == ["s-2", "s-0"]
    assert compensating.sagas == ()


@pytest.mark.parametrize("total", [7, 6])
async def test_list_sagas_cursor_walks_every_page_without_duplicates(
    store: SagaStore, total: int
) -> None:
    """Following ``next_cursor`` visits every saga exactly once and ends with ``None``."""
    for i in range(total):
        await put(store, instance(f"s-{i}"))

    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    for _ in range(total + 2):  # a bound, so a cursor that never ends fails instead of hanging
        page = await store.list_sagas(limit=3, cursor=cursor)
        seen += [s.saga_id for s in page.sagas]
        sizes.append(len(page.sagas))
        cursor = page.next_cursor
        if cursor is None:
            break

    assert cursor is None
    assert seen == [f"s-{i}" for i in reversed(range(total))]
    assert sizes == ([3, 3, 1] if total == 7 else [3, 3])


async def test_list_sagas_cursor_pagination_keeps_the_status_filter(store: SagaStore) -> None:
    """Pages of a filtered listing hold only that status, across every page."""
    for i in range(9):
        await put(
            store, instance(f"s-{i}", status=SagaStatus.FAILED if i % 2 else SagaStatus.COMPLETED)
        )

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        page = await store.list_sagas(status=SagaStatus.COMPLETED, limit=2, cursor=cursor)
        seen += [s.saga_id for s in page.sagas]
        cursor = page.next_cursor
        if cursor is None:
            break

    assert seen == ["s-8", "s-6", "s-4", "s-2", "s-0"]


async def test_list_sagas_page_shows_changes_made_after_start(store: SagaStore) -> None:
    """A listed saga reflects its latest status, not the one it started with."""
    await put(store, instance("s-1"))
    await store.transition(
        Transition(saga_id="s-1", fence=1, status=SagaStatus.COMPLETED, release=True)
    )

    (listed,) = (await store.list_sagas()).sagas

    assert listed.status is SagaStatus.COMPLETED


async def test_count_by_status_counts_every_status_including_zeros(store: SagaStore) -> None:
    """Every status appears in the counts, with zero where no saga is in it."""
    assert await store.count_by_status() == dict.fromkeys(SagaStatus, 0)
    for i, status in enumerate(
        [SagaStatus.RUNNING, SagaStatus.RUNNING, SagaStatus.FAILED, SagaStatus.COMPLETED]
    ):
        await put(store, instance(f"s-{i}", status=status))

    counts = await store.count_by_status()

    assert counts == {
        SagaStatus.RUNNING: 2,
        SagaStatus.COMPENSATING: 0,
        SagaStatus.COMPLETED: 1,
        SagaStatus.COMPENSATED: 0,
        SagaStatus.FAILED: 1,
    }


# -- history and health -----------------------------------------------------------------------


async def test_events_come_back_oldest_first_with_every_field(store: SagaStore) -> None:
    """The history lists the events of every write in the order they were written."""
    await store.start(instance("s-1"), started(), lease_seconds=LIVE)
    written = [
        SagaEvent(type="step_retry", step="a", attempt=1, detail="boom; attempt 2", at=10.0),
        SagaEvent(type="step_succeeded", step="a", attempt=2, at=11.0),
        SagaEvent(type="step_started", step="b", attempt=1, at=11.0),
        SagaEvent(type="step_succeeded", step="b", attempt=1, at=12.0),
        SagaEvent(type="saga_completed", at=12.0),
    ]
    await store.transition(
        Transition(saga_id="s-1", fence=1, status=SagaStatus.RUNNING, events=(written[0],))
    )
    await store.transition(
        Transition(
            saga_id="s-1",
            fence=1,
            revision=1,
            status=SagaStatus.RUNNING,
            events=tuple(written[1:3]),
        )
    )
    await store.transition(
        Transition(
            saga_id="s-1",
            fence=1,
            revision=2,
            status=SagaStatus.COMPLETED,
            events=tuple(written[3:]),
            release=True,
        )
    )

    events = await store.events("s-1")

    assert events[1:] == written
    assert events[0].type == "saga_started"


async def test_events_of_one_saga_exclude_other_sagas_events(store: SagaStore) -> None:
    """Each saga's history holds only its own events."""
    await put(store, instance("s-1"))
    await put(store, instance("s-2"))
    await store.transition(
        Transition(
            saga_id="s-2",
            fence=1,
            status=SagaStatus.RUNNING,
            events=(SagaEvent(type="step_retry", step="a"),),
        )
    )

    assert [e.type for e in await store.events("s-1")] == ["saga_started"]
    assert [e.type for e in await store.events("s-2")] == ["saga_started", "step_retry"]
    assert await store.events("nope") == []


async def test_ping_answers_when_the_store_is_up(store: SagaStore) -> None:
    """A healthy store answers a ping without raising."""
    await store.ping()


# -- SQLite only --------------------------------------------------------------------------------


async def test_sqlite_store_keeps_everything_across_a_reopen(tmp_path: Path) -> None:
    """What the SQLite store acknowledged is still there after it is closed and opened again."""
    url = f"sqlite:///{tmp_path / 'durable.db'}"
    first = await SqliteStore.open(url)
    try:
        await put(first, instance("s-1", business_key="k", input={"total": 20}))
        await first.transition(
            Transition(
                saga_id="s-1",
                fence=1,
                status=SagaStatus.COMPLETED,
                steps=(
                    StepRecord(
                        index=0, name="a", status=StepStatus.SUCCEEDED, attempts=1, result=7
                    ),
                ),
                events=(SagaEvent(type="saga_completed"),),
                release=True,
            )
        )
    finally:
        await first.close()

    second = await SqliteStore.open(url)
    try:
        got = await stored(second, "s-1")
        assert got.status is SagaStatus.COMPLETED
        assert got.input == {"total": 20}
        assert got.steps[0].result == 7
        assert [e.type for e in await second.events("s-1")] == ["saga_started", "saga_completed"]
        again = await second.start(instance("s-2", business_key="k"), started(), lease_seconds=LIVE)
        assert not again.created
    finally:
        await second.close()
