"""Definition versions: each instance runs to its end on the version it started with."""

from __future__ import annotations

import asyncio

import pytest

from sagakit.errors import UnknownSaga
from sagakit.orchestrator import Probe, SagaOrchestrator
from sagakit.records import SagaStatus
from sagakit.saga import Saga, Step
from tests.engine.test_orchestrator import SAGA, Crash, Harness, crash_at, harness, quiet

__all__ = ["harness"]  # the fixture, imported so that pytest finds it here


def v1(h: Harness) -> Saga:
    """Version 1 of the saga: steps ``reserve`` then ``charge``."""
    return Saga(SAGA, [h.step("reserve", result="r1"), h.step("charge")], version=1)


def v2(h: Harness) -> Saga:
    """Version 2 of the saga: ``charge`` first, then ``reserve``, then ``notify``."""
    steps: list[Step] = [h.step("charge"), h.step("reserve", result="r2"), h.step("notify")]
    return Saga(SAGA, steps, version=2)


def deploy(
    h: Harness,
    *sagas: Saga,
    owner: str,
    lease_seconds: float = 15.0,
    probe: Probe = quiet,
) -> SagaOrchestrator:
    """An orchestrator of ``sagas`` (shut down with the harness)."""
    orch = SagaOrchestrator(
        h.store, sagas, owner=owner, lease_seconds=lease_seconds, sleep=h.sleeper, probe=probe
    )
    h._made.append(orch)
    return orch


def ran(h: Harness) -> list[str]:
    """The steps whose action ran, in order."""
    return [c.ctx.step for c in h.journal.calls if c.kind == "do"]


async def test_start_runs_the_newest_version_unless_one_is_named(harness: Harness) -> None:
    """Two versions registered side by side: no version starts v2, ``version=1`` starts v1."""
    orch = deploy(harness, v1(harness), v2(harness), owner="worker-a")

    newest = await orch.start(SAGA, {"order_id": "o-1"})
    done_new = await orch.wait(newest.instance.saga_id, timeout=5.0)
    steps_new = ran(harness)
    older = await orch.start(SAGA, {"order_id": "o-2"}, version=1)
    done_old = await orch.wait(older.instance.saga_id, timeout=5.0)

    assert (done_new.version, done_new.status) == (2, SagaStatus.COMPLETED)
    assert steps_new == ["charge", "reserve", "notify"]
    assert (done_old.version, done_old.status) == (1, SagaStatus.COMPLETED)
    assert ran(harness)[3:] == ["reserve", "charge"]


async def test_start_of_an_unknown_version_raises_unknown_saga_and_stores_nothing(
    harness: Harness,
) -> None:
    """An unregistered version (or name) is refused with a message naming what exists."""
    orch = deploy(harness, v1(harness), v2(harness), owner="worker-a")

    with pytest.raises(UnknownSaga) as version_error:
        await orch.start(SAGA, {"order_id": "o-1"}, version=3)
    with pytest.raises(UnknownSaga) as name_error:
        await orch.start("refund", {"order_id": "o-1"})

    assert version_error.value.message == (
        f"saga {SAGA!r} has no version 3 (registered versions: 1, 2)"
    )
    assert name_error.value.message == "no saga named 'refund' is registered"
    assert (await harness.store.list_sagas()).sagas == ()
    assert harness.journal.calls == []


async def test_old_instance_resumed_after_a_deploy_finishes_on_its_own_version(
    harness: Harness,
) -> None:
    """A v1 instance stranded by a crash finishes on v1's steps; new starts then use v2."""
    old = deploy(
        harness,
        v1(harness),
        owner="worker-old",
        lease_seconds=0.05,
        probe=crash_at("after_do", "reserve"),
    )
    started = await old.start(SAGA, {"order_id": "o-1"})
    with pytest.raises(Crash):
        await old.drive(started.instance)
    await asyncio.sleep(0.1)

    new = deploy(harness, v1(harness), v2(harness), owner="worker-new")
    assert await new.recover() == 1
    done = await new.wait(started.instance.saga_id, timeout=5.0)
    fresh = await new.start(SAGA, {"order_id": "o-2"})
    done_fresh = await new.wait(fresh.instance.saga_id, timeout=5.0)

    assert (done.version, done.status) == (1, SagaStatus.COMPLETED)
    assert [s.name for s in done.steps] == ["reserve", "charge"]
    assert ran(harness) == ["reserve", "reserve", "charge", "charge", "reserve", "notify"]
    assert (done_fresh.version, done_fresh.status) == (2, SagaStatus.COMPLETED)


async def test_orchestrator_without_the_old_version_leaves_its_instance_to_one_that_has_it(
    harness: Harness,
) -> None:
    """A v2-only process neither recovers nor resumes a v1 instance; a v1 process finishes it."""
    old = deploy(
        harness,
        v1(harness),
        owner="worker-old",
        lease_seconds=0.05,
        probe=crash_at("before_do", "charge"),
    )
    started = await old.start(SAGA, {"order_id": "o-1"})
    with pytest.raises(Crash):
        await old.drive(started.instance)
    await asyncio.sleep(0.1)
    saga_id = started.instance.saga_id
    before = await harness.store.get(saga_id)

    only_v2 = deploy(harness, v2(harness), owner="worker-v2")
    recovered = await only_v2.recover()
    resumed = await only_v2.resume(saga_id)
    untouched = await harness.store.get(saga_id)
    with_v1 = deploy(harness, v1(harness), v2(harness), owner="worker-both")
    assert await with_v1.recover() == 1
    done = await with_v1.wait(saga_id, timeout=5.0)

    assert (recovered, resumed) == (0, False)
    assert before is not None
    assert untouched is not None
    assert (untouched.owner, untouched.fence) == (before.owner, before.fence)
    assert (done.version, done.status) == (1, SagaStatus.COMPLETED)
    assert "notify" not in ran(harness)
