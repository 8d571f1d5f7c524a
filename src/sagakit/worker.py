"""The worker: keeps this process's leases alive and takes over sagas whose driver went away."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sagakit.orchestrator import SagaOrchestrator

logger = logging.getLogger("sagakit.worker")

RECOVER_BATCH = 100


class Worker:
    """Renews leases and recovers abandoned sagas until stopped.

    Both loops run in one :class:`asyncio.TaskGroup`: if one dies, the worker stops,
    rather than carrying on half-alive (holding leases it no longer renews).
    """

    def __init__(self, orchestrator: SagaOrchestrator, *, poll_seconds: float = 1.0) -> None:
        self.orchestrator = orchestrator
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for abandoned sagas now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Run both loops until cancelled."""
        await self.orchestrator.store.on_release(self.wake)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._renew_forever(), name="sagakit-renew-leases")
            group.create_task(self._recover_forever(), name="sagakit-recover")

    async def _renew_forever(self) -> None:
        interval = self.orchestrator.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.orchestrator.renew_leases()
            except Exception:
                # Keep trying: a lease that lapses is taken over safely (fencing), not lost.
                logger.exception("lease renewal failed")

    async def _recover_forever(self) -> None:
        while True:
            try:
                found = await self.orchestrator.recover(RECOVER_BATCH)
            except Exception:
                # A store hiccup must not stop recovery for good; the next poll retries.
                logger.exception("recovery poll failed")
                found = 0
            # A full batch means more may be waiting: look again at once.
            if found < RECOVER_BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()
