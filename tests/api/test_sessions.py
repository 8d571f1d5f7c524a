"""Dashboard sessions: kept server-side, ended at sign-out and expiry, throttled, logged."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Final

import httpx
import pytest
from fastapi import FastAPI

from sagakit.api.sessions import COOKIE, Sessions
from sagakit.api.throttle import SignInThrottle
from tests.api.conftest import Serve, client_of
from tests.api.support import TOKEN, failed_saga, json_of

VIEWER_TOKEN: Final = "viewer-token-1"
SAME_ORIGIN: Final = {"Origin": "http://testserver"}


def browser(app: FastAPI, base_url: str = "http://testserver") -> httpx.AsyncClient:
    """A client with no token of its own: what signing in puts in its jar is all it has."""
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url=base_url)


@contextlib.asynccontextmanager
async def signed_in(app: FastAPI, token: str = TOKEN) -> AsyncIterator[httpx.AsyncClient]:
    """A browser signed in with ``token``."""
    async with browser(app) as http:
        response = await http.post("/dashboard/login", data={"token": token})
        assert response.status_code == 303, response.text
        yield http


def copy_of(app: FastAPI, original: httpx.AsyncClient) -> httpx.AsyncClient:
    """Another browser holding a copy of ``original``'s session cookie."""
    http = browser(app)
    http.cookies.set(COOKIE, original.cookies[COOKIE])
    return http


@pytest.fixture
async def app(serve: Serve) -> AsyncIterator[FastAPI]:
    """The app with a viewer token configured."""
    async with serve(viewer_tokens=VIEWER_TOKEN) as running:
        yield running


async def test_a_copied_cookie_stops_working_after_sign_out(app: FastAPI) -> None:
    """The session is ended in the database: a copy of its cookie is refused at once."""
    async with signed_in(app) as first, copy_of(app, first) as copy:
        assert (await copy.get("/dashboard")).status_code == 200

        assert (await first.post("/dashboard/logout")).status_code == 303

        after = await copy.get("/dashboard")
        assert after.status_code == 401
        assert "name=token" in after.text


async def test_a_session_ends_after_session_hours(serve: Serve) -> None:
    """With ``SAGAKIT_SESSION_HOURS=2`` a session answers at 1:59 and is refused at 2:00."""
    async with serve(session_hours=2) as app:
        sessions: Sessions = app.state.sessions
        start = time.time()
        sessions.clock = lambda: start
        async with signed_in(app) as http:
            sessions.clock = lambda: start + 2 * 3600 - 60
            assert (await http.get("/dashboard")).status_code == 200
            sessions.clock = lambda: start + 2 * 3600
            assert (await http.get("/dashboard")).status_code == 401


async def test_two_sign_ins_give_two_sessions_ended_one_at_a_time(app: FastAPI) -> None:
    """Each sign-in opens its own session: different ids, and signing one out leaves the other."""
    async with signed_in(app) as one, signed_in(app) as two:
        assert one.cookies[COOKIE] != two.cookies[COOKIE]
        assert len(one.cookies[COOKIE]) >= 22  # 128 bits and more, in URL-safe base64
        await one.post("/dashboard/logout")
        assert (await one.get("/dashboard")).status_code == 401
        assert (await two.get("/dashboard")).status_code == 200


async def test_a_new_admin_token_ends_every_session(serve: Serve) -> None:
    """Restarted with another admin token, the old cookies are refused and their rows gone."""
    async with (
        serve(admin_token="first-token", viewer_tokens=VIEWER_TOKEN) as app,
        signed_in(app, "first-token") as admin,
        signed_in(app, VIEWER_TOKEN) as viewer,
    ):
        cookies = [admin.cookies[COOKIE], viewer.cookies[COOKIE]]
    async with serve(admin_token="second-token", viewer_tokens=VIEWER_TOKEN) as app:
        sessions: Sessions = app.state.sessions
        assert await sessions.prune() == 0  # the start already deleted them
        for cookie in cookies:
            async with browser(app) as http:
                http.cookies.set(COOKIE, cookie)
                assert (await http.get("/dashboard")).status_code == 401


@pytest.mark.parametrize(
    "cookie",
    ["", "forged", "x" * 43, "ä" * 40, "y" * 100_000],
    ids=["empty", "word", "id-sized", "non-ascii", "huge"],
)
async def test_a_forged_cookie_is_refused_with_the_sign_in_form(app: FastAPI, cookie: str) -> None:
    """A cookie that names no session gets 401 and the form, whatever its size or content."""
    async with browser(app) as http:
        response = await http.get("/dashboard", headers={b"cookie": f"{COOKIE}={cookie}".encode()})
    assert response.status_code == 401
    assert "name=token" in response.text


async def test_the_cookie_is_httponly_strict_and_secure_over_https(app: FastAPI) -> None:
    """Over https the cookie is Secure too; it holds no token."""
    async with browser(app, "https://testserver") as http:
        response = await http.post("/dashboard/login", data={"token": TOKEN})
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Secure" in cookie
    assert TOKEN not in cookie


async def test_the_cookie_is_not_secure_over_plain_http(app: FastAPI) -> None:
    """Over http (a local run) the cookie cannot be Secure, or the browser would drop it."""
    async with browser(app) as http:
        response = await http.post("/dashboard/login", data={"token": TOKEN})
    assert "Secure" not in response.headers["set-cookie"]


async def test_the_sixth_failed_sign_in_in_a_minute_gets_429_until_the_minute_ends(
    app: FastAPI,
) -> None:
    """Five wrong tokens are 401; then even the right one is 429 with Retry-After, for a minute."""
    throttle: SignInThrottle = app.state.sign_in_throttle
    start = time.monotonic()
    throttle.clock = lambda: start
    async with browser(app) as http:
        wrong = [
            (await http.post("/dashboard/login", data={"token": "no"})).status_code
            for _ in range(5)
        ]
        refused = await http.post("/dashboard/login", data={"token": TOKEN})
        throttle.clock = lambda: start + 59
        still = await http.post("/dashboard/login", data={"token": TOKEN})
        throttle.clock = lambda: start + 60.5
        later = await http.post("/dashboard/login", data={"token": TOKEN})

    assert wrong == [401] * 5
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    assert COOKIE not in refused.headers.get("set-cookie", "")
    assert still.status_code == 429
    assert still.headers["retry-after"] == "1"
    assert later.status_code == 303


async def test_the_throttle_counts_each_client_address_apart() -> None:
    """Another address may sign in while one is throttled."""
    throttle = SignInThrottle(clock=lambda: 100.0)
    for _ in range(5):
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 60
    assert throttle.retry_after("10.0.0.2") is None


async def test_a_viewer_session_sees_no_buttons_and_its_actions_get_403(app: FastAPI) -> None:
    """Signed in with a viewer token: the failed saga's page has no buttons; a retry is 403."""
    saga_id, _ = await failed_saga(app)
    async with signed_in(app, VIEWER_TOKEN) as viewer:
        page = await viewer.get(f"/dashboard/sagas/{saga_id}")
        refused = await viewer.post(f"/dashboard/sagas/{saga_id}/retry", headers=SAME_ORIGIN)
    async with client_of(app) as admin:
        saga = json_of(await admin.get(f"/sagas/{saga_id}"))

    assert page.status_code == 200
    assert saga_id in page.text
    assert "Retry compensation" not in page.text
    assert "Mark resolved" not in page.text
    assert refused.status_code == 403
    assert saga["status"] == "failed"


async def test_sign_in_failure_sign_out_and_actions_are_logged_with_the_client_address(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """Each line names the client's address; the action's names the session that acted."""
    saga_id, set_up = await failed_saga(app)
    set_up.broken = False
    caplog.set_level(logging.INFO, logger="sagakit.auth")
    async with browser(app) as http:
        await http.post("/dashboard/login", data={"token": "wrong"})
        await http.post("/dashboard/login", data={"token": TOKEN})
        label = http.cookies[COOKIE][:8]
        await http.post(f"/dashboard/sagas/{saga_id}/retry", headers=SAME_ORIGIN)
        await http.post("/dashboard/logout")

    lines = [r for r in caplog.records if r.name == "sagakit.auth"]
    assert [r.getMessage() for r in lines] == [
        "sign-in failed: wrong token",
        "signed in as admin",
        f"operator action retry on saga {saga_id} by dashboard:{label}",
        "signed out",
    ]
    assert {getattr(r, "client", None) for r in lines} == {"127.0.0.1"}
    assert getattr(lines[2], "saga_id", None) == saga_id
