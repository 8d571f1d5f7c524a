"""Operator actions over HTTP: retry, cancel and resolve, behind the admin token, in the history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

import httpx
import pytest
from fastapi import FastAPI

from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON
from sagakit.saga import Saga, Step, StepContext
from sagakit.shop.local_participants import CHECKOUT
from tests.api.support import (
    ADMIN,
    FRAGILE,
    TOKEN,
    JsonDict,
    Refuse,
    SetUp,
    checkout,
    error_of,
    failed_saga,
    json_of,
    settled_saga,
)

GATED: Final = "gated"
WRONG_TOKENS: Final = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]


class Journal(Step):
    """A step that notes in ``done`` each action and compensation it runs."""

    def __init__(self, name: str, done: list[str]) -> None:
        self.name = name
        self.done = done

    async def do(self, ctx: StepContext) -> JSON:
        self.done.append(f"do {self.name}")
        return {"step": self.name}

    async def compensate(self, ctx: StepContext) -> None:
        self.done.append(f"undo {self.name}")


class Gate(Journal):
    """A step whose action waits until ``opened`` is set; ``entered`` says it is waiting."""

    def __init__(self, done: list[str]) -> None:
        super().__init__("gate", done)
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def do(self, ctx: StepContext) -> JSON:
        self.entered.set()
        await self.opened.wait()
        return await super().do(ctx)


class Gated:
    """The ``gated`` saga (first, gate, last) registered in a running app."""

    def __init__(self, app: FastAPI) -> None:
        self.done: list[str] = []
        self.gate = Gate(self.done)
        self.orchestrator: SagaOrchestrator = app.state.service.orchestrator
        steps = [Journal("first", self.done), self.gate, Journal("last", self.done)]
        self.orchestrator.register(Saga(GATED, steps))

    async def running(self) -> str:
        """Start a saga and return its id once it waits at the gate (so it stays running)."""
        started = await self.orchestrator.start(GATED, {"purpose": "test"})
        await asyncio.wait_for(self.gate.entered.wait(), 5.0)
        return started.instance.saga_id


@pytest.fixture
async def gated(app: FastAPI) -> AsyncIterator[Gated]:
    """The ``gated`` saga in the app; its gate is opened at the end so the app stops at once."""
    saga = Gated(app)
    try:
        yield saga
    finally:
        saga.gate.opened.set()


async def saga_of(client: httpx.AsyncClient, saga_id: str) -> JsonDict:
    """``GET /sagas/{saga_id}``, which must answer 200."""
    response = await client.get(f"/sagas/{saga_id}")
    assert response.status_code == 200, response.text
    return json_of(response)


def event_types(saga: JsonDict) -> list[str]:
    """The types of a saga's events, oldest first."""
    events = saga["events"]
    assert isinstance(events, list)
    return [str(e["type"]) for e in events]


def event(saga: JsonDict, type_: str) -> JsonDict:
    """The one event of ``type_`` in a saga's history."""
    events = saga["events"]
    assert isinstance(events, list)
    found = [e for e in events if e["type"] == type_]
    assert len(found) == 1, event_types(saga)
    return dict(found[0])


async def resolve(
    client: httpx.AsyncClient, saga_id: str, reason: str = "refunded by hand"
) -> httpx.Response:
    """``POST /sagas/{saga_id}/resolve`` as the admin, with ``reason``."""
    return await client.post(f"/sagas/{saga_id}/resolve", json={"reason": reason}, headers=ADMIN)


# -- cancel -------------------------------------------------------------------------------------


async def test_cancel_of_a_running_saga_answers_202_and_it_ends_compensated(
    client: httpx.AsyncClient, gated: Gated
) -> None:
    """Cancel answers 202 while the saga runs; it then compensates every step, newest first."""
    saga_id = await gated.running()

    response = await client.post(f"/sagas/{saga_id}/cancel", headers=ADMIN)

    assert response.status_code == 202
    assert json_of(response) == {"saga_id": saga_id, "status": "running"}
    gated.gate.opened.set()
    saga = await settled_saga(client, saga_id)
    assert (saga["status"], saga["error"]) == ("compensated", "cancelled by an operator")
    assert gated.done == ["do first", "do gate", "undo last", "undo gate", "undo first"]


async def test_cancel_is_recorded_in_the_history_with_the_admin_api_as_actor(
    client: httpx.AsyncClient, gated: Gated
) -> None:
    """The history shows ``operator_cancel`` by the admin API, then ``saga_cancelled``."""
    saga_id = await gated.running()

    assert (await client.post(f"/sagas/{saga_id}/cancel", headers=ADMIN)).status_code == 202
    gated.gate.opened.set()

    saga = await settled_saga(client, saga_id)
    assert event(saga, "operator_cancel")["detail"] == "cancel requested by admin API"
    types = event_types(saga)
    assert types.index("operator_cancel") < types.index("saga_cancelled")
    assert types[-1] == "saga_compensated"


@pytest.mark.parametrize("headers", WRONG_TOKENS, ids=["none", "wrong", "basic"])
async def test_cancel_without_the_admin_token_answers_401_and_the_saga_completes(
    client: httpx.AsyncClient, gated: Gated, headers: dict[str, str]
) -> None:
    """Without the right token cancel answers 401, records nothing, and the saga runs on."""
    saga_id = await gated.running()

    response = await client.post(f"/sagas/{saga_id}/cancel", headers=headers)

    error_of(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    gated.gate.opened.set()
    saga = await settled_saga(client, saga_id)
    assert saga["status"] == "completed"
    assert "operator_cancel" not in event_types(saga)


@pytest.mark.parametrize("order_id", ["order1", "order3"])
async def test_cancel_of_a_finished_saga_answers_409_and_changes_nothing(
    client: httpx.AsyncClient, order_id: str
) -> None:
    """A completed or compensated saga cannot be cancelled: 409, and it stays as it was."""
    saga_id = await checkout(client, order_id)
    before = await saga_of(client, saga_id)

    response = await client.post(f"/sagas/{saga_id}/cancel", headers=ADMIN)

    assert "not running" in error_of(response, 409)
    assert await saga_of(client, saga_id) == before


async def test_cancel_of_a_failed_saga_answers_409(app: FastAPI, client: httpx.AsyncClient) -> None:
    """A failed saga waits for retry or resolve; cancelling it answers 409."""
    saga_id, _ = await failed_saga(app)

    response = await client.post(f"/sagas/{saga_id}/cancel", headers=ADMIN)

    assert error_of(response, 409) == f"saga {saga_id} is failed, not running"
    assert (await saga_of(client, saga_id))["status"] == "failed"


# -- resolve ------------------------------------------------------------------------------------


async def test_resolve_of_a_failed_saga_answers_200_with_the_saga_compensated(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Resolve answers 200 and the saga's summary, now ``compensated``; nothing is run."""
    saga_id, _ = await failed_saga(app)

    response = await resolve(client, saga_id)

    assert response.status_code == 200
    body = json_of(response)
    assert set(body) == {
        "saga_id",
        "name",
        "status",
        "business_key",
        "error",
        "failed_step",
        "created_at",
        "updated_at",
    }
    assert (body["saga_id"], body["name"], body["status"]) == (saga_id, FRAGILE, "compensated")
    saga = await saga_of(client, saga_id)
    assert saga["status"] == "compensated"
    steps = saga["steps"]
    assert isinstance(steps, list)
    assert [s["status"] for s in steps] == ["compensating", "failed"]  # as the undo left them


async def test_resolve_is_recorded_in_the_history_with_the_actor_and_the_reason(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The history's last event is ``operator_resolved`` by the admin API, with the reason."""
    saga_id, _ = await failed_saga(app)

    assert (await resolve(client, saga_id, "refund ref. 4711 sent by hand")).status_code == 200

    saga = await saga_of(client, saga_id)
    assert event_types(saga)[-1] == "operator_resolved"
    assert event(saga, "operator_resolved")["detail"] == (
        "resolved by admin API: refund ref. 4711 sent by hand"
    )


async def test_resolve_of_a_failed_checkout_lets_the_order_be_checked_out_again(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A failed checkout blocks its order with 409 until resolved; then a new saga may start."""
    set_up = SetUp()
    app.state.service.orchestrator.register(Saga(CHECKOUT, [set_up, Refuse()], version=2))
    saga_id = str(json_of(await client.post("/checkout/order1"))["saga_id"])
    assert (await client.post("/checkout/order1")).status_code == 409

    assert (await resolve(client, saga_id)).status_code == 200

    set_up.broken = False
    again = await client.post("/checkout/order1")
    assert again.status_code == 400
    assert json_of(again)["saga_id"] != saga_id


@pytest.mark.parametrize("headers", WRONG_TOKENS, ids=["none", "wrong", "basic"])
async def test_resolve_without_the_admin_token_answers_401_and_the_saga_stays_failed(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """Without the right token resolve answers 401 and records nothing."""
    saga_id, _ = await failed_saga(app)

    response = await client.post(
        f"/sagas/{saga_id}/resolve", json={"reason": "sneaky"}, headers=headers
    )

    error_of(response, 401)
    saga = await saga_of(client, saga_id)
    assert saga["status"] == "failed"
    assert "operator_resolved" not in event_types(saga)


async def test_resolve_of_a_running_saga_answers_409(
    client: httpx.AsyncClient, gated: Gated
) -> None:
    """Only a failed saga can be resolved: a running one answers 409 and runs on."""
    saga_id = await gated.running()

    response = await resolve(client, saga_id)

    assert error_of(response, 409) == f"saga {saga_id} is running, not failed"
    assert (await saga_of(client, saga_id))["status"] == "running"


@pytest.mark.parametrize("order_id", ["order1", "order3"])
async def test_resolve_of_a_finished_saga_answers_409_and_changes_nothing(
    client: httpx.AsyncClient, order_id: str
) -> None:
    """A completed or compensated saga cannot be resolved: 409, and it stays as it was."""
    saga_id = await checkout(client, order_id)
    before = await saga_of(client, saga_id)

    response = await resolve(client, saga_id)

    assert "not failed" in error_of(response, 409)
    assert await saga_of(client, saga_id) == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"reason": ""},
        {"reason": "   "},
        {"reason": "x" * 1001},
        {"reason": 42},
        {"reason": None},
        {"reason": "ok", "extra": True},
        ["ok"],
    ],
    ids=["missing", "empty", "blank", "too-long", "number", "null", "extra-field", "list"],
)
async def test_resolve_with_a_bad_reason_answers_422_and_the_saga_stays_failed(
    app: FastAPI, client: httpx.AsyncClient, body: object
) -> None:
    """A reason that is missing, blank, not a string or over 1000 characters answers 422."""
    saga_id, _ = await failed_saga(app)

    response = await client.post(f"/sagas/{saga_id}/resolve", json=body, headers=ADMIN)

    assert error_of(response, 422).startswith("invalid request: body")
    assert (await saga_of(client, saga_id))["status"] == "failed"


async def test_resolve_accepts_a_reason_of_1000_characters(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The longest reason allowed is kept whole in the history."""
    saga_id, _ = await failed_saga(app)

    assert (await resolve(client, saga_id, "r" * 1000)).status_code == 200

    detail = event(await saga_of(client, saga_id), "operator_resolved")["detail"]
    assert detail == "resolved by admin API: " + "r" * 1000


# -- retry --------------------------------------------------------------------------------------


async def test_retry_is_recorded_in_the_history_with_the_admin_api_as_actor(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A retry's ``operator_retry`` event names the admin API, before the new attempt."""
    saga_id, set_up = await failed_saga(app)
    set_up.broken = False

    assert (await client.post(f"/sagas/{saga_id}/retry", headers=ADMIN)).status_code == 202

    saga = await settled_saga(client, saga_id)
    assert saga["status"] == "compensated"
    assert event(saga, "operator_retry")["detail"] == "retry requested by admin API"
    types = event_types(saga)
    assert types.index("saga_failed") < types.index("operator_retry") < len(types) - 1


# -- every action -------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["retry", "cancel", "resolve"])
async def test_action_on_an_unknown_saga_answers_404(
    client: httpx.AsyncClient, action: str
) -> None:
    """Each action on a saga id that names nothing answers 404 with the id in the message."""
    response = await client.post(
        f"/sagas/nosuchsaga/{action}", json={"reason": "why not"}, headers=ADMIN
    )

    assert error_of(response, 404) == "no saga 'nosuchsaga'"


@pytest.mark.parametrize("action", ["retry", "cancel", "resolve"])
async def test_action_with_an_invalid_saga_id_answers_422(
    client: httpx.AsyncClient, action: str
) -> None:
    """Each action refuses an id outside ``^[A-Za-z0-9_-]{1,64}$`` with 422."""
    response = await client.post(f"/sagas/{'x' * 65}/{action}", json={"reason": "r"}, headers=ADMIN)

    error_of(response, 422)


@pytest.mark.parametrize("action", ["retry", "cancel", "resolve"])
async def test_action_without_the_token_on_an_unknown_saga_answers_401_not_404(
    client: httpx.AsyncClient, action: str
) -> None:
    """Without the token nothing is looked up: even an unknown saga answers 401."""
    response = await client.post(f"/sagas/nosuchsaga/{action}", json={"reason": "why not"})

    error_of(response, 401)


async def test_openapi_describes_every_admin_action_and_its_errors(
    client: httpx.AsyncClient,
) -> None:
    """``/openapi.json`` documents retry, cancel and resolve with their success and errors."""
    paths = json_of(await client.get("/openapi.json"))["paths"]
    assert isinstance(paths, dict)

    for action, success in (("retry", "202"), ("cancel", "202"), ("resolve", "200")):
        operation = paths[f"/sagas/{{saga_id}}/{action}"]["post"]
        assert operation["description"], action
        assert {success, "401", "404", "409"} <= set(operation["responses"]), action
    resolve_body = paths["/sagas/{saga_id}/resolve"]["post"]["requestBody"]
    assert resolve_body["required"] is True
