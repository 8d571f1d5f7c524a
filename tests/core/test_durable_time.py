"""Durable time: a ``Sleep`` step and a saga ``deadline``, across a process's death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sagakit import SagaOrchestrator, SagaStatus, Sleep, StepStatus
from tests.core.timed_app import SAGAS

ROOT = Path(__file__).resolve().parents[2]

#: A process that starts a saga through connect(), waits until it is parked, and dies.
PARKS_THEN_DIES = """
import asyncio, os, signal, sys
from sagakit import SagaOrchestrator
from tests.core.timed_app import SAGAS

async def main() -> None:
    async with SagaOrchestrator.connect(sys.argv[1], SAGAS, lease_seconds=1.0) as orchestrator:
        handle = await orchestrator.start(sys.argv[2], {}, business_key="k1")
        for _ in range(100):
            saga = await orchestrator.store.get(handle.saga_id)
            if saga is not None and any(s.status.value == "waiting" for s in saga.steps):
                break
            await asyncio.sleep(0.02)
        os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the timed sagas' effects are written, one line each."""
    path = tmp_path / "ledger.txt"
    path.touch()
    monkeypatch.setenv("TIMED_LEDGER", str(path))
    return path


def _effects(ledger: Path) -> list[str]:
    return [line.split()[0] for line in ledger.read_text().splitlines()]


def _park_and_die(url: str, saga: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PARKS_THEN_DIES, url, saga],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr


async def test_a_sleep_parks_the_saga_with_no_owner_then_goes_on(
    store_url: str, ledger: Path
) -> None:
    """While it sleeps no process holds the saga; after the time, a worker finishes it."""
    async with SagaOrchestrator.connect(store_url, SAGAS, poll_seconds=0.05) as orchestrator:
        began = time.monotonic()
        handle = await orchestrator.start("nap", {})
        asleep = await orchestrator.wait(handle.saga_id, timeout=0.5)
        done = await handle.result(timeout=10)
        took = time.monotonic() - began
        events = await orchestrator.store.events(handle.saga_id)
    assert asleep.status is SagaStatus.RUNNING
    assert asleep.owner is None
    assert asleep.steps[1].status is StepStatus.WAITING
    assert done.status is SagaStatus.COMPLETED
    assert done.results()["cool-off"] == {"slept": 1.0}
    assert took >= 1.0
    assert ("step_waiting", "sleeping 1s") in [(e.type, e.detail) for e in events]
    assert _effects(ledger) == ["reserve", "ship"]


async def test_a_sleep_spans_the_death_of_the_process_that_began_it(
    durable_url: str, ledger: Path
) -> None:
    """Killed while its saga sleeps: the next process that connects wakes it on time."""
    began = time.time()
    _park_and_die(durable_url, "nap")
    async with SagaOrchestrator.connect(durable_url, SAGAS, poll_seconds=0.05) as orchestrator:
        done = await (await orchestrator.start("nap", {}, business_key="k1")).result(timeout=15)
    assert done.status is SagaStatus.COMPLETED
    assert done.steps[1].finished_at is not None
    assert done.steps[1].finished_at >= began + 1.0
    assert _effects(ledger) == ["reserve", "ship"]


async def test_a_deadline_cancels_a_saga_still_running_and_says_why(
    store_url: str, ledger: Path
) -> None:
    """Past its deadline a waiting saga is compensated; the history and error say why."""
    async with SagaOrchestrator.connect(store_url, SAGAS, poll_seconds=0.05) as orchestrator:
        handle = await orchestrator.start("slow", {})
        done = await handle.result(timeout=10)
        events = await orchestrator.store.events(handle.saga_id)
    assert done.status is SagaStatus.COMPENSATED
    assert done.error == "the saga's deadline of 1s passed"
    assert ("saga_cancelled", "the saga's deadline of 1s passed") in [
        (e.type, e.detail) for e in events
    ]
    assert _effects(ledger) == ["reserve", "release"]


async def test_a_deadline_spans_the_death_of_the_process_that_began_it(
    durable_url: str, ledger: Path
) -> None:
    """Killed while its saga waits: the next process compensates it once the deadline passed."""
    _park_and_die(durable_url, "slow")
    async with SagaOrchestrator.connect(durable_url, SAGAS, poll_seconds=0.05) as orchestrator:
        done = await (await orchestrator.start("slow", {}, business_key="k1")).result(timeout=15)
    assert done.status is SagaStatus.COMPENSATED
    assert done.error == "the saga's deadline of 1s passed"
    assert _effects(ledger) == ["reserve", "release"]


def test_durations_must_be_positive() -> None:
    """A sleep or a deadline of zero seconds is refused where it is written."""
    with pytest.raises(ValueError, match="a sleep is a positive number of seconds"):
        Sleep("nap", 0)
    with pytest.raises(ValueError, match="a deadline is a positive number of seconds"):
        type(SAGAS[1])("late", list(SAGAS[1].steps), deadline=0)
