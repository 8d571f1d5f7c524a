"""``sagakit.fastapi.operator_router`` in an application of its own: the ``/sagas`` API and
the dashboard under a prefix, for the sagas ``sagas_lifespan`` runs there."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sagakit import SagaOrchestrator, SagaStatus
from sagakit.fastapi import get_orchestrator, operator_router, sagas_lifespan
from tests.acceptance import ops_app

TOKEN = "ops-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
VIEWERS = ["viewer-one", "viewer-two"]


def shop_app(url: str) -> FastAPI:
    """An app of its own: its sagas in the lifespan, the operator router at ``/ops``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with sagas_lifespan(app, url, ops_app.SAGAS, poll_seconds=0.05):
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(operator_router(admin_token=TOKEN, viewer_tokens=VIEWERS), prefix="/ops")
    return app


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def client(
    request: pytest.FixtureRequest, sqlite_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app, its lifespan entered, on each store."""
    url = {"memory": "memory://", "sqlite": sqlite_url}.get(request.param)
    app = shop_app(url or request.getfixturevalue("postgres_url"))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://shop") as http,
    ):
        yield http


def orchestrator_of(client: httpx.AsyncClient) -> SagaOrchestrator:
    """The orchestrator the app's lifespan runs."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    app: Any = transport.app
    orchestrator = app.state.sagakit_orchestrator
    assert isinstance(orchestrator, SagaOrchestrator)
    return orchestrator


async def parked_booking(client: httpx.AsyncClient) -> str:
    """A booking saga of the app, parked on its ``approval`` wait; its id."""
    orchestrator = orchestrator_of(client)
    handle = await orchestrator.start("booking", {})
    await orchestrator.wait(handle.saga_id, timeout=0.3)
    return handle.saga_id


async def test_the_sagas_api_lists_shows_and_signals_the_apps_sagas(
    client: httpx.AsyncClient,
) -> None:
    """``/ops/sagas`` shows the app's saga; a signal with the admin token completes it."""
    saga_id = await parked_booking(client)

    stranger = await client.get("/ops/sagas")
    listing = (await client.get("/ops/sagas", params={"name": "booking"}, headers=ADMIN)).json()
    shown = (await client.get(f"/ops/sagas/{saga_id}", headers=ADMIN)).json()
    refused = await client.post(f"/ops/sagas/{saga_id}/signals/approved", json={"by": "x"})
    sent = await client.post(
        f"/ops/sagas/{saga_id}/signals/approved", json={"by": "ana"}, headers=ADMIN
    )
    done = await orchestrator_of(client).wait(saga_id, timeout=5)

    assert stranger.status_code == 401  # the checkout service's rules: reading needs a token
    assert [s["saga_id"] for s in listing["sagas"]] == [saga_id]
    assert [s["status"] for s in shown["steps"]] == ["succeeded", "waiting", "pending"]
    assert refused.status_code == 401
    assert sent.status_code == 202
    assert done.status is SagaStatus.COMPLETED
    assert done.results()["approval"] == {"by": "ana"}


async def test_a_viewer_token_reads_the_sagas_but_may_not_act_on_them(
    client: httpx.AsyncClient,
) -> None:
    """Each of ``viewer_tokens`` reads ``/ops/sagas``; acting answers 403 and changes nothing."""
    saga_id = await parked_booking(client)
    viewers = [{"Authorization": f"Bearer {token}"} for token in VIEWERS]

    listed = [await client.get("/ops/sagas", headers=viewer) for viewer in viewers]
    cancel = await client.post(f"/ops/sagas/{saga_id}/cancel", headers=viewers[0])
    unknown = await client.get("/ops/sagas", headers={"Authorization": "Bearer viewer"})
    shown = (await client.get(f"/ops/sagas/{saga_id}", headers=viewers[1])).json()

    assert [r.status_code for r in listed] == [200, 200]
    assert cancel.status_code == 403
    assert unknown.status_code == 401
    assert shown["status"] == "running"
    assert [s["status"] for s in shown["steps"]] == ["succeeded", "waiting", "pending"]


async def test_errors_are_json_in_an_app_without_sagakits_handlers(
    client: httpx.AsyncClient,
) -> None:
    """Unknown saga: 404 with a JSON message; a cancel of a finished saga: 409."""
    saga_id = await parked_booking(client)
    assert (await client.post(f"/ops/sagas/{saga_id}/cancel", headers=ADMIN)).status_code == 202
    await orchestrator_of(client).wait(saga_id, timeout=5)

    missing = await client.post("/ops/sagas/nope/cancel", headers=ADMIN)
    again = await client.post(f"/ops/sagas/{saga_id}/cancel", headers=ADMIN)

    assert missing.status_code == 404
    assert missing.json() == {"error": "no saga 'nope'"}
    assert again.status_code == 409
    assert "compensated" in again.json()["error"]


async def test_the_dashboard_lives_under_the_prefix(client: httpx.AsyncClient) -> None:
    """Sign-in redirects to ``/ops/dashboard``, whose links all stay under ``/ops``."""
    saga_id = await parked_booking(client)

    signed = await client.post("/ops/dashboard/login", data={"token": TOKEN})
    page = await client.get("/ops/dashboard")
    links = re.findall(r'(?:href|action)="?(/[^" >]*)', page.text)

    assert signed.status_code == 303
    assert signed.headers["location"] == "/ops/dashboard"
    assert page.status_code == 200
    assert f'href="/ops/dashboard/sagas/{saga_id}"' in page.text
    assert links
    assert all(link.startswith("/ops/dashboard") for link in links), links


async def test_get_orchestrator_still_serves_the_apps_own_routes(
    client: httpx.AsyncClient,
) -> None:
    """The router changes nothing for the app's own use of the orchestrator."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    app: Any = transport.app
    assert get_orchestrator.__name__ == "get_orchestrator"
    assert app.state.sagakit_orchestrator is orchestrator_of(client)
