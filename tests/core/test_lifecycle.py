"""One lifecycle: ``connect()`` runs a worker, ``run()`` is a worker alone, and a saga left by
a process killed mid-step is finished by the next process that connects."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sagakit import SagaOrchestrator, SagaStatus, open_store
from sagakit.records import SagaInstance
from sagakit.store import MemoryStore, SagaStore
from tests.core.parcel_app import SAGAS

ROOT = Path(__file__).resolve().parents[2]
#: The console script of the environment running the tests.
SAGAKIT = str(Path(sys.executable).parent / "sagakit")

#: A process that starts a parcel saga through connect() and is killed inside ``ship``.
DOOMED = """
import asyncio, sys
from sagakit import SagaOrchestrator
from tests.core.parcel_app import SAGAS

async def main() -> None:
    async with SagaOrchestrator.connect(sys.argv[1], SAGAS, lease_seconds=1.0) as orchestrator:
        handle = await orchestrator.start("parcel", {"items": 2}, business_key="p1")
        await handle.result(timeout=30)

asyncio.run(main())
"""


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file where the parcel saga's effects are written, one line each."""
    path = tmp_path / "ledger.txt"
    path.touch()
    monkeypatch.setenv("PARCEL_LEDGER", str(path))
    monkeypatch.delenv("PARCEL_CRASH_IN", raising=False)
    return path


def _effects(ledger: Path) -> list[tuple[str, str]]:
    pairs = [line.split(" ", 1) for line in ledger.read_text().splitlines()]
    return [(what, key) for what, key in pairs]


def _kill_mid_ship(url: str) -> None:
    """Run DOOMED until it dies of SIGKILL inside ``ship``."""
    env = {**os.environ, "PARCEL_CRASH_IN": "ship", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", DOOMED, url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr


async def test_a_saga_killed_mid_step_is_finished_by_the_next_connect(
    durable_url: str, ledger: Path
) -> None:
    """A process SIGKILLed inside a step: the next connect() finishes its saga, same key."""
    _kill_mid_ship(durable_url)
    async with SagaOrchestrator.connect(durable_url, SAGAS, poll_seconds=0.1) as orchestrator:
        # The business key finds the unfinished saga; its lease (1 s) runs out, and the worker
        # that connect() runs takes it over.
        handle = await orchestrator.start("parcel", {"items": 2}, business_key="p1")
        done = await handle.result(timeout=20)
    assert done.status is SagaStatus.COMPLETED
    effects = _effects(ledger)
    assert [what for what, _ in effects] == ["reserve", "ship", "ship"]
    assert effects[1][1] == effects[2][1]  # ship ran again with the same idempotency key


async def _wait_until_ended(store: SagaStore, saga_id: str, timeout: float) -> SagaInstance:
    deadline = time.monotonic() + timeout
    while True:
        instance = await store.get(saga_id)
        assert instance is not None
        if instance.status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED):
            return instance
        assert time.monotonic() < deadline, f"saga still {instance.status}"
        await asyncio.sleep(0.05)


async def test_sagakit_worker_app_finishes_a_saga_a_killed_process_left(
    durable_url: str, ledger: Path
) -> None:
    """``sagakit worker --app`` takes over a killed process's saga; SIGTERM ends it with 0."""
    _kill_mid_ship(durable_url)
    store = await open_store(durable_url)
    try:
        left = await store.latest_by_key("parcel", "p1")
        assert left is not None
        worker = await asyncio.create_subprocess_exec(
            *(SAGAKIT, "worker", "--app", "tests.core.parcel_app:sagas"),
            *("--database-url", durable_url, "--poll-seconds", "0.1"),
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            done = await _wait_until_ended(store, left.saga_id, timeout=20)
        finally:
            worker.send_signal(signal.SIGTERM)
            _, errors = await asyncio.wait_for(worker.communicate(), 20)
    finally:
        await store.close()
    assert done.status is SagaStatus.COMPLETED
    assert worker.returncode == 0, errors
    assert [what for what, _ in _effects(ledger)] == ["reserve", "ship", "ship"]


def test_sagakit_worker_with_a_bad_app_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    """An ``--app`` naming nothing usable: one line on stderr that says why, exit code 2."""
    for reference, why in [
        ("tests.core.nowhere:SAGAS", "no module named 'tests.core.nowhere'"),
        ("tests.core.parcel_app:MISSING", "has no attribute 'MISSING'"),
        ("tests.core.parcel_app:os", "expected a Saga"),
        ("tests.core.parcel_app", "expected module:attribute"),
    ]:
        done = subprocess.run(
            [SAGAKIT, "worker", "--app", reference, "--database-url", f"sqlite:///{tmp_path}/x.db"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (reference, done.stderr)
        assert done.stderr.count("\n") == 1, (reference, done.stderr)
        assert why in done.stderr, (reference, done.stderr)


async def test_connect_starts_and_finishes_a_saga(store_url: str, ledger: Path) -> None:
    """Inside ``async with connect()``, a started saga runs to its end and is stored."""
    async with SagaOrchestrator.connect(store_url, SAGAS) as orchestrator:
        handle = await orchestrator.start("parcel", {"items": 1})
        done = await handle.result(timeout=10)
        stored = await orchestrator.store.get(done.saga_id)
    assert done.status is SagaStatus.COMPLETED
    assert stored is not None
    assert stored.results()["ship"] == {"tracking": f"T-{done.saga_id[:8]}"}


async def test_run_alone_finishes_a_saga_another_process_handed_back(
    store_url: str, ledger: Path
) -> None:
    """``orchestrator.run()`` is a worker: it takes over a saga handed back by another one."""
    first: SagaStore = MemoryStore() if store_url == "memory://" else await open_store(store_url)
    second = first if store_url == "memory://" else await open_store(store_url)
    leaving = SagaOrchestrator(first, SAGAS, owner="leaving")
    staying = SagaOrchestrator(second, SAGAS, owner="staying")
    # A start whose driver is handed back before it runs: as a process shutting down would.
    started = await leaving.start("parcel", {"items": 3})
    await leaving.shutdown(grace=0.0)
    worker = asyncio.create_task(staying.run(poll_seconds=0.05))
    try:
        done = await _wait_until_ended(second, started.instance.saga_id, timeout=10)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await staying.shutdown()
        await first.close()
        if second is not first:
            await second.close()
    assert done.status is SagaStatus.COMPLETED


async def test_leaving_connect_at_once_closes_the_store_promptly(store_url: str) -> None:
    """A block left as soon as it is entered (the worker still starting) closes within seconds."""
    for turns in range(12):  # leave after 0, 1, 2... turns of the loop: at each step of its start
        async with asyncio.timeout(10):
            async with SagaOrchestrator.connect(store_url, SAGAS) as orchestrator:
                for _ in range(turns):
                    await asyncio.sleep(0)
                assert orchestrator.sagas == tuple(SAGAS)
