"""Waiting for an external signal: durable, resumed by the signal, compensated at its deadline."""

from __future__ import annotations

import asyncio

import pytest

from sagakit.errors import InvalidTransition, SagaNotFound
from sagakit.orchestrator import Probe, SagaOrchestrator
from sagakit.records import JSON, SagaInstance, SagaStatus, StepStatus
from sagakit.saga import WaitFor
from sagakit.store import SagaStore
from tests.engine.test_orchestrator import SAGA, Crash, Gated, Harness, crash_at, harness, quiet

__all__ = ["harness"]  # the fixture, imported so that pytest finds it here

SIGNAL = "approved"
PAYLOAD: JSON = {"by": "alice", "amount": 30}


def saga_with_wait(
    h: Harness,
    *,
    deadline: float = 30.0,
    owner: str = "worker-a",
    lease_seconds: float = 15.0,
    probe: Probe = quiet,
) -> SagaOrchestrator:
    """An orchestrator of ``reserve``, ``approval`` (waits for ``approved``), ``ship``."""
    return h.orchestrator(
        h.step("reserve", result="held"),
        WaitFor("approval", signal=SIGNAL, deadline=deadline),
        h.step("ship"),
        owner=owner,
        lease_seconds=lease_seconds,
        probe=probe,
    )


async def parked(
    store: SagaStore, saga_id: str, orch: SagaOrchestrator | None = None
) -> SagaInstance:
    """The instance once it waits for its signal with nobody holding it (``orch`` done with it)."""
    for _ in range(500):
        current = await store.get(saga_id)
        assert current is not None
        idle = orch is None or saga_id not in orch.driving
        if current.steps[1].status is StepStatus.WAITING and current.owner is None and idle:
            return current
        await asyncio.sleep(0.01)
    raise AssertionError(f"saga {saga_id} never parked")


async def test_signal_delivered_while_waiting_completes_with_the_payload_in_the_next_step(
    harness: Harness,
) -> None:
    """The waiting saga holds no lease; the signal resumes it and ``ship`` reads the payload."""
    orch = saga_with_wait(harness)
    started = await orch.start(SAGA, {"order_id": "o-1"})
    saga_id = started.instance.saga_id

    waiting = await parked(harness.store, saga_id, orch)
    driving = orch.driving
    new = await orch.signal(saga_id, SIGNAL, PAYLOAD)
    done = await orch.wait(saga_id, timeout=5.0)

    assert waiting.status is SagaStatus.RUNNING
    assert waiting.steps[1].started_at is not None
    assert waiting.lease_until == pytest.approx(waiting.steps[1].started_at + 30.0)
    assert driving == frozenset()
    assert new
    assert done.status is SagaStatus.COMPLETED
    assert done.steps[1].result == PAYLOAD
    (ship,) = harness.journal.of("do", "ship")
    assert ship.results == {"reserve": "held", "approval": PAYLOAD}
    types = await harness.types(saga_id)
    assert ("step_waiting", "approval") in types
    assert types.index(("signal_received", None)) < types.index(("step_succeeded", "approval"))


async def test_signal_before_the_wait_is_kept_and_consumed_when_the_saga_gets_there(
    harness: Harness,
) -> None:
    """A signal that arrives while an earlier step runs completes the wait without parking."""
    gated = Gated("reserve", harness.journal)
    orch = harness.orchestrator(
        gated, WaitFor("approval", signal=SIGNAL, deadline=30.0), harness.step("ship")
    )
    started = await orch.start(SAGA, {"order_id": "o-1"})
    saga_id = started.instance.saga_id
    await asyncio.wait_for(gated.entered.wait(), 5.0)

    new = await orch.signal(saga_id, SIGNAL, PAYLOAD)
    gated.gate.set()
    done = await orch.wait(saga_id, timeout=5.0)

    assert new
    assert done.status is SagaStatus.COMPLETED
    assert done.steps[1].result == PAYLOAD
    assert harness.journal.of("do", "ship")[0].results["approval"] == PAYLOAD
    assert ("step_waiting", "approval") not in await harness.types(saga_id)


async def test_duplicate_signal_changes_nothing_and_one_after_the_end_is_refused(
    harness: Harness,
) -> None:
    """A second delivery is not new and keeps the first payload; after completion it is refused."""
    gated = Gated("reserve", harness.journal)
    orch = harness.orchestrator(
        gated, WaitFor("approval", signal=SIGNAL, deadline=30.0), harness.step("ship")
    )
    started = await orch.start(SAGA, {"order_id": "o-1"})
    saga_id = started.instance.saga_id
    await asyncio.wait_for(gated.entered.wait(), 5.0)

    first = await orch.signal(saga_id, SIGNAL, PAYLOAD)
    second = await orch.signal(saga_id, SIGNAL, {"by": "mallory"})
    gated.gate.set()
    done = await orch.wait(saga_id, timeout=5.0)
    with pytest.raises(InvalidTransition):
        await orch.signal(saga_id, SIGNAL, PAYLOAD)

    assert (first, second) == (True, False)
    assert done.status is SagaStatus.COMPLETED
    assert done.steps[1].result == PAYLOAD
    assert harness.journal.count("do", "ship") == 1
    assert (await harness.types(saga_id)).count(("signal_received", None)) == 1


async def test_signal_to_an_unknown_saga_raises_saga_not_found(harness: Harness) -> None:
    """Nothing is stored for a saga id that names nothing."""
    orch = saga_with_wait(harness)

    with pytest.raises(SagaNotFound):
        await orch.signal("no-such-saga", SIGNAL, PAYLOAD)


async def test_deadline_passing_without_a_signal_compensates_the_saga(harness: Harness) -> None:
    """Recovery notices the passed deadline; the wait gives up and ``reserve`` is compensated."""
    # Long enough that a loaded machine still parks the saga before the deadline passes.
    orch = saga_with_wait(harness, deadline=1.0)
    started = await orch.start(SAGA, {"order_id": "o-1"})
    saga_id = started.instance.saga_id
    await parked(harness.store, saga_id, orch)
    early = await orch.recover()
    await asyncio.sleep(1.1)

    late = await orch.recover()
    done = await orch.wait(saga_id, timeout=5.0)

    assert (early, late) == (0, 1)
    assert done.status is SagaStatus.COMPENSATED
    assert harness.journal.compensated() == ["reserve"]
    assert harness.journal.count("do", "ship") == 0
    assert done.failed_step == "approval"
    assert done.error == f"no signal {SIGNAL!r} within 1.0s"
    assert [s.status for s in done.steps] == [
        StepStatus.COMPENSATED,
        StepStatus.COMPENSATED,
        StepStatus.PENDING,
    ]


async def test_crash_before_parking_is_recovered_and_the_saga_still_waits_for_its_signal(
    harness: Harness,
) -> None:
    """A driver killed on its way to wait is recovered elsewhere; it parks; the signal ends it."""
    crashing = saga_with_wait(
        harness, lease_seconds=0.05, probe=crash_at("before_wait", "approval")
    )
    started = await crashing.start(SAGA, {"order_id": "o-1"})
    saga_id = started.instance.saga_id
    with pytest.raises(Crash):
        await crashing.drive(started.instance)
    await asyncio.sleep(0.1)

    rescuer = saga_with_wait(harness, owner="worker-b")
    assert await rescuer.recover() == 1
    await parked(harness.store, saga_id)
    await rescuer.signal(saga_id, SIGNAL, PAYLOAD)
    done = await rescuer.wait(saga_id, timeout=5.0)

    assert done.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "reserve") == 1
    assert harness.journal.of("do", "ship")[0].results["approval"] == PAYLOAD


async def test_crash_while_parked_loses_nothing_and_a_new_process_delivers_the_signal(
    harness: Harness,
) -> None:
    """After the driver died parked, no recovery takes the saga early; the signal resumes it."""
    crashing = saga_with_wait(harness, probe=crash_at("after_wait", "approval"))
    started = await crashing.start(SAGA, {"order_id": "o-1"})
    saga_id = started.instance.saga_id
    with pytest.raises(Crash):
        await crashing.drive(started.instance)

    restarted = saga_with_wait(harness, owner="worker-b")
    taken_early = await restarted.recover()
    await restarted.signal(saga_id, SIGNAL, PAYLOAD)
    done = await restarted.wait(saga_id, timeout=5.0)

    assert taken_early == 0
    assert done.status is SagaStatus.COMPLETED
    assert done.steps[1].result == PAYLOAD
    assert harness.journal.count("do", "reserve") == 1
    assert harness.journal.count("do", "ship") == 1


async def test_crash_after_the_signal_is_stored_is_finished_by_recovery(harness: Harness) -> None:
    """A process that died right after storing the signal left the saga for recovery at once."""
    orch = saga_with_wait(harness, probe=crash_at("after_signal", SIGNAL))
    started = await orch.start(SAGA, {"order_id": "o-1"})
    saga_id = started.instance.saga_id
    await parked(harness.store, saga_id, orch)
    with pytest.raises(Crash):
        await orch.signal(saga_id, SIGNAL, PAYLOAD)

    restarted = saga_with_wait(harness, owner="worker-b")
    recovered = await restarted.recover()
    done = await restarted.wait(saga_id, timeout=5.0)

    assert recovered == 1
    assert done.status is SagaStatus.COMPLETED
    assert done.steps[1].result == PAYLOAD
    assert harness.journal.count("do", "ship") == 1


async def test_cancelled_driver_before_the_wait_is_recovered_and_then_waits_for_the_signal(
    harness: Harness,
) -> None:
    """A driver cancelled mid-step is resumed elsewhere; the saga parks, then the signal ends it."""
    gated = Gated("reserve", harness.journal)
    steps = (gated, WaitFor("approval", signal=SIGNAL, deadline=30.0), harness.step("ship"))
    stopped = harness.orchestrator(*steps, lease_seconds=0.05)
    started = await stopped.start(SAGA, {"order_id": "o-1"})
    saga_id = started.instance.saga_id
    task = stopped.drive(started.instance)
    await asyncio.wait_for(gated.entered.wait(), 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gated.gate.set()
    await asyncio.sleep(0.1)

    rescuer = harness.orchestrator(*steps, owner="worker-b")
    assert await rescuer.recover() == 1
    await parked(harness.store, saga_id)
    await rescuer.signal(saga_id, SIGNAL, PAYLOAD)
    done = await rescuer.wait(saga_id, timeout=5.0)

    assert done.status is SagaStatus.COMPLETED
    assert harness.journal.count("do", "reserve") == 2
    assert done.steps[1].result == PAYLOAD
