"""sagakit.fastapi in a small app of its own: the lifespan, the worker, the dependency."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from sagakit.errors import StepFailed, StoreError
from sagakit.fastapi import Orchestrator, sagas_lifespan
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, SagaStatus
from sagakit.saga import Saga, StepContext, step
from sagakit.store import open_store
from sagakit.testing import CrashAt, SimulatedCrash


@step("reserve")
async def reserve(ctx: StepContext) -> JSON:
    """Reserve; refuse the order ``o-refused``; take an hour over ``o-slow``."""
    if ctx.input["order_id"] == "o-refused":
        raise StepFailed("Not enough stock")
    if ctx.input["order_id"] == "o-slow":
        await asyncio.sleep(3600)
    return {"reserved": ctx.input["order_id"]}


ORDER = Saga("order", [reserve])


def make_app(url: str, *, poll_seconds: float = 1.0, grace: float = 5.0) -> FastAPI:
    """An existing app to which sagas were added with one line in its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with sagas_lifespan(app, url, [ORDER], poll_seconds=poll_seconds, grace=grace):
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/orders/{order_id}/checkout")
    async def checkout(
        order_id: str, orchestrator: Orchestrator, wait: bool = True
    ) -> dict[str, str | None]:
        handle = await orchestrator.start("order", {"order_id": order_id}, business_key=order_id)
        if not wait:
            return {"saga_id": handle.saga_id, "status": handle.instance.status}
        ended = await handle.result(timeout=5)
        return {"saga_id": ended.saga_id, "status": ended.status, "error": ended.error}

    return app


def client_of(app: FastAPI) -> httpx.AsyncClient:
    """A client that sends its requests straight to ``app`` (no lifespan of its own)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A fresh SQLite database."""
    return f"sqlite:///{tmp_path / 'app.db'}"


async def test_route_gets_the_orchestrator_and_runs_sagas_to_their_outcome(url: str) -> None:
    """A route with an ``Orchestrator`` parameter starts sagas; each answer is its outcome."""
    app = make_app(url)
    async with app.router.lifespan_context(app), client_of(app) as client:
        done = (await client.post("/orders/o-1/checkout")).json()
        again = (await client.post("/orders/o-1/checkout")).json()
        refused = (await client.post("/orders/o-refused/checkout")).json()

    assert done["status"] == "completed"
    assert again["saga_id"] == done["saga_id"]
    assert (refused["status"], refused["error"]) == ("compensated", "Not enough stock")


async def test_lifespan_worker_recovers_a_saga_a_dead_process_left(url: str) -> None:
    """A saga whose process died mid-step is finished by the app's worker once its lease ends."""
    store = await open_store(url)
    dead = SagaOrchestrator(store, [ORDER], lease_seconds=0.05, probe=CrashAt("after_do:reserve"))
    handle = await dead.start("order", {"order_id": "o-2"})
    with pytest.raises(SimulatedCrash):
        await dead.wait(handle.saga_id)
    await store.close()  # the process is gone, its lease not given back

    app = make_app(url, poll_seconds=0.02)
    async with app.router.lifespan_context(app):
        orchestrator = app.state.sagakit_orchestrator
        assert isinstance(orchestrator, SagaOrchestrator)
        ended = await orchestrator.wait(handle.saga_id, timeout=5)

    assert ended.status is SagaStatus.COMPLETED
    assert ended.steps[0].attempts == 2


async def test_leaving_the_lifespan_hands_unfinished_sagas_back_and_closes_the_store(
    url: str,
) -> None:
    """On shutdown a saga still running is released at once and the store is closed."""
    app = make_app(url, grace=0.05)
    async with app.router.lifespan_context(app), client_of(app) as client:
        started = (await client.post("/orders/o-slow/checkout?wait=false")).json()
        store = app.state.sagakit_orchestrator.store
    assert not hasattr(app.state, "sagakit_orchestrator")

    reopened = await open_store(url)
    try:
        left = await reopened.get(started["saga_id"])
    finally:
        await reopened.close()
    assert left is not None
    assert (left.status, left.owner, left.lease_until) == (SagaStatus.RUNNING, None, None)
    with pytest.raises(StoreError, match="closed"):
        await store.ping()


async def test_route_without_the_lifespan_says_what_is_missing() -> None:
    """Outside ``sagas_lifespan`` the dependency raises a ``RuntimeError`` naming it."""
    app = make_app("memory://")
    async with client_of(app) as client:
        with pytest.raises(RuntimeError, match=r"sagas_lifespan\(app, \.\.\.\)"):
            await client.post("/orders/o-1/checkout")
