"""Who may do what, walked over the app's own route table: strangers, viewers and the admin."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Final

import pytest
from fastapi import FastAPI
from starlette.routing import BaseRoute, Route

from sagakit.api.access import MAX_TOKEN, Role, role_of
from sagakit.settings import Settings
from tests.api.conftest import Serve, client_of
from tests.api.support import ADMIN, TOKEN, json_of

VIEWER_TOKEN: Final = "viewer-token-1"
VIEWER: Final = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
#: The routes anyone may call: the shop's own, liveness, metrics, the docs, and signing in.
PUBLIC: Final = {
    ("POST", "/checkout/{order_id}"),
    ("GET", "/orders/{order_id}"),
    ("POST", "/orders"),
    ("GET", "/users/{user_id}"),
    ("GET", "/items/{item_id}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("POST", "/dashboard/login"),
    # Signing out needs no session: without one it ends nothing.
    ("POST", "/dashboard/logout"),
}
#: Closed routes that are not part of the operator surface: only the admin may create.
ADMIN_ONLY: Final = {("POST", "/users"), ("POST", "/items")}


def walk(table: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every (method, path template) of a route table, included routers' routes too."""
    for route in table:
        if isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method not in ("HEAD", "OPTIONS"):
                    yield method, prefix + route.path
        included = getattr(route, "original_router", None)
        if included is not None:  # FastAPI keeps an included router as one entry
            context = getattr(route, "include_context", None)
            yield from walk(included.routes, prefix + getattr(context, "prefix", ""))


def routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """Every (method, path template) the app answers, HEAD and OPTIONS aside."""
    yield from walk(app.routes)


def concrete(path: str) -> str:
    """A path template with each parameter filled with a valid id."""
    return re.sub(r"\{[^}]+\}", "x1", path)


def closed(app: FastAPI) -> list[tuple[str, str]]:
    """The routes that must refuse a stranger."""
    return [r for r in routes(app) if r not in PUBLIC]


@pytest.fixture
async def viewer_app(serve: Serve) -> AsyncIterator[FastAPI]:
    """The app with two viewer tokens configured."""
    async with serve(viewer_tokens=f" {VIEWER_TOKEN} , other-viewer ") as app:
        yield app


async def test_route_table_holds_the_operator_surface(app: FastAPI) -> None:
    """The walk below sees every saga route and the dashboard, so it cannot pass vacuously."""
    found = set(closed(app))
    assert {
        ("GET", "/sagas"),
        ("GET", "/sagas/{saga_id}"),
        ("POST", "/sagas/{saga_id}/retry"),
        ("POST", "/sagas/{saga_id}/cancel"),
        ("POST", "/sagas/{saga_id}/resolve"),
        ("POST", "/sagas/{saga_id}/signals/{name}"),
        ("GET", "/dashboard"),
        ("GET", "/dashboard/sagas/{saga_id}"),
        ("POST", "/dashboard/sagas/{saga_id}/retry"),
    } <= found
    assert not PUBLIC & found


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong", "basic"],
)
async def test_a_stranger_gets_401_on_every_route_that_is_not_public(
    app: FastAPI, headers: dict[str, str]
) -> None:
    """Every route of the table outside the public list answers 401 without a valid token."""
    async with client_of(app, headers=headers) as stranger:
        answers = {
            (method, path): (
                await stranger.request(method, concrete(path), json={"reason": "r"})
            ).status_code
            for method, path in closed(app)
        }

    assert answers == dict.fromkeys(answers, 401)


async def test_a_viewer_gets_403_on_every_route_that_changes_something(
    viewer_app: FastAPI,
) -> None:
    """A viewer token opens every closed GET and gets 403 from every closed POST."""
    async with client_of(viewer_app, headers=VIEWER) as viewer:
        answers = {
            (method, path): (
                await viewer.request(method, concrete(path), json={"reason": "r"})
            ).status_code
            for method, path in closed(viewer_app)
        }

    writes = {r: s for r, s in answers.items() if r[0] != "GET"}
    reads = {r: s for r, s in answers.items() if r[0] == "GET"}
    assert writes == dict.fromkeys(writes, 403)
    assert reads
    assert not {r: s for r, s in reads.items() if s in (401, 403)}


async def test_a_viewer_reads_the_saga_list_and_a_saga(viewer_app: FastAPI) -> None:
    """``GET /sagas`` and ``GET /sagas/{id}`` answer a viewer as they answer the admin."""
    async with client_of(viewer_app, headers={}) as http:
        saga_id = json_of(await http.post("/checkout/order1"))["saga_id"]
        listed = await http.get("/sagas", headers=VIEWER)
        one = await http.get(f"/sagas/{saga_id}", headers=VIEWER)

    assert listed.status_code == 200
    body: Any = listed.json()
    assert [s["saga_id"] for s in body["sagas"]] == [saga_id]
    assert json_of(one)["saga_id"] == saga_id


async def test_a_viewer_cannot_cancel_and_the_saga_is_unchanged(viewer_app: FastAPI) -> None:
    """A viewer's cancel of a finished saga is 403 (not 409): nothing is looked at or done."""
    async with client_of(viewer_app, headers={}) as http:
        saga_id = json_of(await http.post("/checkout/order1"))["saga_id"]
        refused = await http.post(f"/sagas/{saga_id}/cancel", headers=VIEWER)
        after: Any = (await http.get(f"/sagas/{saga_id}", headers=ADMIN)).json()

    assert refused.status_code == 403
    assert "admin" in str(json_of(refused)["error"])
    assert [e["type"] for e in after["events"]].count("operator_cancel") == 0


async def test_openapi_declares_the_bearer_scheme_on_every_closed_route_and_only_there(
    app: FastAPI,
) -> None:
    """``/openapi.json`` has a bearer scheme, required by every closed route it documents."""
    async with client_of(app, headers={}) as http:
        spec: Any = (await http.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http"
    assert schemes["bearer"]["scheme"] == "bearer"
    secured = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == [{"bearer": []}]
    }
    documented = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
    }
    assert secured == {r for r in closed(app) if r in documented}
    assert ("GET", "/sagas") in secured
    assert ("POST", "/users") in secured


def test_token_comparison_knows_admin_viewers_and_nobody_else() -> None:
    """The admin token is admin, each viewer token viewer; prefixes, blanks and giants nothing."""
    settings = Settings(admin_token=TOKEN, viewer_tokens="v1,v2")

    assert role_of(settings, TOKEN) is Role.ADMIN
    assert role_of(settings, "v2") is Role.VIEWER
    for presented in ("", None, TOKEN[:-1], TOKEN + " ", "v", "v1,v2", "x" * (MAX_TOKEN + 1)):
        assert role_of(settings, presented) is None
    assert role_of(Settings(admin_token=None, viewer_tokens=""), "") is None


async def test_a_10_mb_bearer_token_is_refused_with_a_4xx(app: FastAPI) -> None:
    """A huge Authorization header is refused (401 here; uvicorn refuses it before with 400)."""
    huge = {"Authorization": "Bearer " + "t" * 10_000_000}
    async with client_of(app, headers={}) as http:
        response = await http.get("/sagas", headers=huge)
    assert response.status_code == 401
    assert set(json_of(response)) == {"error"}
