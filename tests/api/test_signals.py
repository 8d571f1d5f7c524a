"""``POST /sagas/{saga_id}/signals/{name}``: a webhook's signal resumes the saga waiting for it."""

from __future__ import annotations

import asyncio
from typing import Final

import httpx
from fastapi import FastAPI

from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, StepStatus
from sagakit.saga import Saga, Step, StepContext, WaitFor
from tests.api.support import ADMIN, error_of, json_of, settled_saga

APPROVAL: Final = "approval"


class Ship(Step):
    """A step that returns the approval it read from the earlier results."""

    name = "ship"

    async def do(self, ctx: StepContext) -> JSON:
        return {"approved_by": ctx.results[APPROVAL]}


async def waiting_saga(app: FastAPI) -> str:
    """Register and start a saga that waits for ``approved``; its id once it waits."""
    orchestrator: SagaOrchestrator = app.state.service.orchestrator
    orchestrator.register(
        Saga("approve", [WaitFor(APPROVAL, signal="approved", deadline=30.0), Ship()])
    )
    started = await orchestrator.start("approve", {"purpose": "test"})
    saga_id = started.instance.saga_id
    async with asyncio.timeout(5.0):
        while True:
            current = await orchestrator.store.get(saga_id)
            if current is not None and current.steps[0].status is StepStatus.WAITING:
                return saga_id
            await asyncio.sleep(0.01)


async def test_signal_answers_202_and_the_saga_completes_with_its_payload(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """The body is the payload: the next step reads it, and the saga completes."""
    saga_id = await waiting_saga(app)

    response = await client.post(
        f"/sagas/{saga_id}/signals/approved", json={"manager": "bob"}, headers=ADMIN
    )
    saga = await settled_saga(client, saga_id)

    assert response.status_code == 202
    assert json_of(response) == {"saga_id": saga_id, "signal": "approved", "new": True}
    assert saga["status"] == "completed"
    stored = await app.state.service.orchestrator.store.get(saga_id)
    assert stored.steps[1].result == {"approved_by": {"manager": "bob"}}


async def test_signal_to_a_finished_saga_answers_409(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Once the saga completed, a late signal is refused with 409."""
    saga_id = await waiting_saga(app)
    await client.post(f"/sagas/{saga_id}/signals/approved", headers=ADMIN)
    await settled_saga(client, saga_id)

    response = await client.post(f"/sagas/{saga_id}/signals/approved", json=1, headers=ADMIN)

    assert "not running" in error_of(response, 409)


async def test_signal_to_an_unknown_saga_answers_404(client: httpx.AsyncClient) -> None:
    """A saga id that names nothing answers 404."""
    response = await client.post("/sagas/nosuchsaga/signals/approved", json={}, headers=ADMIN)

    assert error_of(response, 404) == "no saga 'nosuchsaga'"


async def test_signal_without_the_admin_token_answers_401_and_stores_nothing(
    stranger: httpx.AsyncClient, app: FastAPI
) -> None:
    """Without the token the saga keeps waiting: nothing was delivered."""
    saga_id = await waiting_saga(app)

    response = await stranger.post(f"/sagas/{saga_id}/signals/approved", json={"manager": "eve"})

    error_of(response, 401)
    assert await app.state.service.orchestrator.store.signals(saga_id) == {}


async def test_openapi_documents_the_signal_route_and_its_errors(
    client: httpx.AsyncClient,
) -> None:
    """``/openapi.json`` describes the route with its 202, 401, 404 and 409 answers."""
    paths = json_of(await client.get("/openapi.json"))["paths"]
    assert isinstance(paths, dict)

    operation = paths["/sagas/{saga_id}/signals/{name}"]["post"]

    assert operation["description"]
    assert {"202", "401", "404", "409"} <= set(operation["responses"])
    assert "requestBody" in operation
