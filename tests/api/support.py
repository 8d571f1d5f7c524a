"""Helpers for the API tests: the admin header, JSON checks, polling, and steps to stage sagas."""

from __future__ import annotations

import asyncio
from typing import Final

import httpx
from fastapi import FastAPI

from sagakit.errors import StepFailed
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, SagaStatus
from sagakit.retry import RetryPolicy
from sagakit.saga import Saga, Step, StepContext

TOKEN: Final = "test-token"
ADMIN: Final = {"Authorization": f"Bearer {TOKEN}"}
JsonDict = dict[str, object]


def json_of(response: httpx.Response) -> JsonDict:
    """The response's body, which must be a JSON object."""
    body = response.json()
    assert isinstance(body, dict), body
    return body


async def checkout(client: httpx.AsyncClient, order_id: str) -> str:
    """Check ``order_id`` out, wait for the answer, and return its saga's id."""
    response = await client.post(f"/checkout/{order_id}")
    assert response.status_code in (200, 400), response.text
    return str(json_of(response)["saga_id"])


async def page_of(
    client: httpx.AsyncClient, **params: str | int
) -> tuple[list[JsonDict], str | None]:
    """One page of ``GET /sagas``: its sagas and its ``next_cursor``."""
    response = await client.get("/sagas", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    body = json_of(response)
    assert set(body) == {"sagas", "next_cursor", "counts"}
    sagas, cursor = body["sagas"], body["next_cursor"]
    assert isinstance(sagas, list)
    assert cursor is None or isinstance(cursor, str)
    return [dict(s) for s in sagas], cursor


async def settled_saga(client: httpx.AsyncClient, saga_id: str, timeout: float = 5.0) -> JsonDict:
    """``GET /sagas/{saga_id}`` polled until the saga is no longer running or compensating."""
    async with asyncio.timeout(timeout):
        while True:
            response = await client.get(f"/sagas/{saga_id}", headers=ADMIN)
            assert response.status_code == 200, response.text
            body = json_of(response)
            if body["status"] not in ("running", "compensating"):
                return body
            await asyncio.sleep(0.01)


class SetUp(Step):
    """Always succeeds; its compensation raises while ``broken`` is true."""

    name = "set_up"
    compensation_retry = RetryPolicy(max_attempts=1, initial_delay=0)

    def __init__(self) -> None:
        self.broken = True

    async def do(self, ctx: StepContext) -> JSON:
        return {"set_up": True}

    async def compensate(self, ctx: StepContext) -> None:
        if self.broken:
            raise RuntimeError("undo is <broken>")


class Refuse(Step):
    """Always refuses, so the saga compensates the step before it."""

    name = "refuse"

    async def do(self, ctx: StepContext) -> JSON:
        raise StepFailed("refused on purpose")


FRAGILE: Final = "fragile"


def fragile_saga() -> tuple[Saga, SetUp]:
    """A saga whose compensation fails for good (and the step that can be mended)."""
    set_up = SetUp()
    return Saga(FRAGILE, [set_up, Refuse()]), set_up


def error_of(response: httpx.Response, status: int) -> str:
    """Check ``response`` is a JSON error of ``status`` without a stack trace; its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    assert 'File "' not in response.text
    message = json_of(response)["error"]
    assert isinstance(message, str)
    assert message
    return message


async def failed_saga(app: FastAPI) -> tuple[str, SetUp]:
    """Start a saga whose compensation fails for good; its id once failed, and its mendable step."""
    saga, set_up = fragile_saga()
    orchestrator: SagaOrchestrator = app.state.service.orchestrator
    orchestrator.register(saga)
    started = await orchestrator.start(FRAGILE, {"purpose": "test"})
    ended = await orchestrator.wait(started.instance.saga_id, 5.0)
    assert ended.status is SagaStatus.FAILED, ended
    return ended.saga_id, set_up


class Held(Step):
    """A step whose action (or, with ``hold_undo``, whose compensation) waits for ``gate``."""

    name = "held"

    def __init__(self, *, hold_undo: bool = False) -> None:
        self.gate = asyncio.Event()
        self.hold_undo = hold_undo

    async def do(self, ctx: StepContext) -> JSON:
        if not self.hold_undo:
            await self.gate.wait()
        return {"held": True}

    async def compensate(self, ctx: StepContext) -> None:
        if self.hold_undo:
            await self.gate.wait()
