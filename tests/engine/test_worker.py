"""The worker: prompt take-over of sagas handed back, and recovery by polling."""

from __future__ import annotations

import asyncio
import time

from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, SagaStatus
from sagakit.saga import Saga, Step, StepContext
from sagakit.store import MemoryStore
from sagakit.store.postgres import PostgresStore
from sagakit.worker import Worker


class Parked(Step):
    """A step that waits until its gate opens (class-wide, shared by both processes)."""

    name = "parked"
    gate = asyncio.Event()

    async def do(self, ctx: StepContext) -> JSON:
        await self.gate.wait()
        return "done"


def saga() -> Saga:
    """One parked step."""
    return Saga("parked", [Parked()])


async def test_a_graceful_hand_over_wakes_other_workers_at_once(postgres_url: str) -> None:
    """On PostgreSQL, sagas released by a stopping process are claimed long before a poll."""
    Parked.gate = asyncio.Event()
    leaving_store = await PostgresStore.open(postgres_url)
    staying_store = await PostgresStore.open(postgres_url)
    leaving = SagaOrchestrator(leaving_store, [saga()], owner="leaving")
    staying = SagaOrchestrator(staying_store, [saga()], owner="staying")
    worker = Worker(staying, poll_seconds=60.0)
    running = asyncio.create_task(worker.run(), name="test-worker")
    try:
        started = await leaving.start("parked", {})
        await asyncio.sleep(0.2)  # the worker has done its first look, and found nothing
        released_at = time.monotonic()
        await leaving.shutdown(grace=0.0)
        while started.instance.saga_id not in staying.driving:
            assert time.monotonic() - released_at < 5.0, "not taken over after a hand-over"
            await asyncio.sleep(0.02)
        taken_after = time.monotonic() - released_at
        Parked.gate.set()
        done = await staying.wait(started.instance.saga_id, timeout=5.0)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await staying.shutdown()
        await leaving_store.close()
        await staying_store.close()
    assert done.status is SagaStatus.COMPLETED
    assert taken_after < 2.0


async def test_without_notifications_the_worker_recovers_by_polling() -> None:
    """A store that cannot notify (memory here) still has abandoned sagas recovered by polls."""
    Parked.gate = asyncio.Event()
    store = MemoryStore()
    leaving = SagaOrchestrator(store, [saga()], owner="leaving")
    staying = SagaOrchestrator(store, [saga()], owner="staying")
    worker = Worker(staying, poll_seconds=0.05)
    started = await leaving.start("parked", {})
    await leaving.shutdown(grace=0.0)
    running = asyncio.create_task(worker.run(), name="test-worker")
    try:
        Parked.gate.set()
        done = await staying.wait(started.instance.saga_id, timeout=5.0)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await staying.shutdown()
    assert done.status is SagaStatus.COMPLETED
