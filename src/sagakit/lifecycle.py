"""One lifecycle for an application's sagas: connect, run a worker beside the caller, close.

``SagaOrchestrator.connect(url, sagas)`` and ``SagaOrchestrator.run()`` are the public names;
this module holds their bodies, and :func:`load_sagas` finds the definitions that
``sagakit worker --app module:attr`` names.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING

from sagakit.saga import Saga

if TYPE_CHECKING:
    from sagakit.orchestrator import Listener, SagaOrchestrator


async def run_worker(orchestrator: SagaOrchestrator, poll_seconds: float) -> None:
    """Renew this process's leases and take over abandoned sagas until cancelled."""
    from sagakit.worker import Worker

    await Worker(orchestrator, poll_seconds=poll_seconds).run()


@contextlib.asynccontextmanager
async def connected(
    cls: type[SagaOrchestrator],
    url: str,
    sagas: Iterable[Saga],
    *,
    poll_seconds: float,
    lease_seconds: float,
    grace: float,
    listeners: Iterable[Listener],
) -> AsyncIterator[SagaOrchestrator]:
    """The body of :meth:`SagaOrchestrator.connect`."""
    orchestrator = await cls.from_url(url, sagas, lease_seconds=lease_seconds, listeners=listeners)
    worker = asyncio.create_task(orchestrator.run(poll_seconds=poll_seconds), name="sagakit-worker")
    try:
        yield orchestrator
    finally:
        worker.cancel()
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        finally:
            await orchestrator.close(grace)


class AppNotFound(ValueError):
    """``--app module:attr`` names nothing usable; the message says why."""


def load_sagas(reference: str) -> list[Saga]:
    """The sagas that ``module:attr`` names: a ``Saga``, an iterable of them, or a plain
    function returning either (called once, here).
    """
    # Like ``python -m``: the application's modules are found from the current directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise AppNotFound(f"--app {reference!r}: expected module:attribute, e.g. myapp.sagas:ALL")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise AppNotFound(f"--app {reference!r}: no module named {exc.name!r}") from exc
        raise
    value: object = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise AppNotFound(f"--app {reference!r}: {module_name} has no attribute {attribute!r}")
        value = getattr(value, part)
    return _as_sagas(reference, value)


def _as_sagas(reference: str, value: object) -> list[Saga]:
    if callable(value) and not isinstance(value, Saga):
        factory: Callable[[], object] = value
        value = factory()
    if isinstance(value, Saga):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        sagas = list(value)
        if sagas and all(isinstance(s, Saga) for s in sagas):
            return [s for s in sagas if isinstance(s, Saga)]
    raise AppNotFound(
        f"--app {reference!r}: expected a Saga, a list of them or a function returning them,"
        f" got {type(value).__name__}"
    )
