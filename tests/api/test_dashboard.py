"""The dashboard: signing in, the saga list and page, live fragments, and the actions."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON
from sagakit.saga import Saga, Step, StepContext
from tests.api.conftest import Serve, client_of
from tests.api.support import ADMIN, TOKEN, Held, error_of, failed_saga, json_of, settled_saga

SIGN_IN_FORM = "<form method=post action=/dashboard/login>"
SAME_ORIGIN = {"Origin": "http://testserver"}


async def sign_in(client: httpx.AsyncClient) -> None:
    """Sign the client in; the session cookie stays in its jar."""
    response = await client.post("/dashboard/login", data={"token": TOKEN})
    assert response.status_code == 303, response.text
    assert client.cookies.get("sagakit_session")


def refused_on_the_page(response: httpx.Response, status: int, saga_id: str) -> str:
    """Check a refused action answers the saga's page with a message above it; the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    found = re.search(r'<p class="notice refused" role="alert">([^<]+)</p>', response.text)
    assert found, response.text
    assert saga_id in response.text
    return found.group(1)


def actor_of(client: httpx.AsyncClient) -> str:
    """How the history names the client's session: ``dashboard:`` and the id's first 8."""
    return f"dashboard:{client.cookies['sagakit_session'][:8]}"


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A browser's client: no token of its own, only what signing in puts in its jar."""
    async with client_of(app, headers={}) as http:
        yield http


async def demo_checkouts(client: httpx.AsyncClient) -> dict[str, str]:
    """Check the three demo orders out; their saga ids by order id."""
    return {
        order_id: str(json_of(await client.post(f"/checkout/{order_id}"))["saga_id"])
        for order_id in ("order1", "order2", "order3")
    }


async def test_dashboard_without_a_cookie_asks_for_the_admin_token(
    client: httpx.AsyncClient,
) -> None:
    """Signed out, ``GET /dashboard`` is a sign-in form for the admin token, and no sagas."""
    ids = await demo_checkouts(client)

    response = await client.get("/dashboard")

    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert SIGN_IN_FORM in response.text
    assert "Token" in response.text
    assert "type=password name=token" in response.text
    assert not any(saga_id[:12] in response.text for saga_id in ids.values())


async def test_saga_page_without_a_cookie_asks_for_the_admin_token(
    client: httpx.AsyncClient,
) -> None:
    """Signed out, a saga's page is the sign-in form, not the saga."""
    saga_id = (await demo_checkouts(client))["order3"]

    response = await client.get(f"/dashboard/sagas/{saga_id}")

    assert response.status_code == 401
    assert SIGN_IN_FORM in response.text
    assert "Invalid shipping address" not in response.text


async def test_login_with_a_wrong_token_answers_401_and_sets_no_cookie(
    client: httpx.AsyncClient,
) -> None:
    """A wrong token answers 401 with the form and a message, and no session cookie."""
    for token in ("wrong-token", "", "test-token ", "test-toke"):
        response = await client.post("/dashboard/login", data={"token": token})

        assert response.status_code == 401, token
        assert "That is not a valid token." in response.text
        assert SIGN_IN_FORM in response.text
        assert "set-cookie" not in response.headers
    assert SIGN_IN_FORM in (await client.get("/dashboard")).text


async def test_login_without_a_configured_token_always_answers_401(serve: Serve) -> None:
    """With no admin token configured nobody can sign in, whatever they type."""
    async with serve(admin_token=None) as app, client_of(app) as client:
        for token in ("", "None", "test-token"):
            response = await client.post("/dashboard/login", data={"token": token})
            assert response.status_code == 401
            assert "set-cookie" not in response.headers


async def test_login_with_the_right_token_sets_a_strict_httponly_cookie(
    client: httpx.AsyncClient,
) -> None:
    """The right token redirects to the list with an HttpOnly, SameSite=Strict session cookie."""
    response = await client.post("/dashboard/login", data={"token": TOKEN})

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("sagakit_session=")
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert TOKEN not in cookie


async def test_signed_in_list_shows_every_saga_with_counts(client: httpx.AsyncClient) -> None:
    """Signed in, the list shows each saga's id, order and status, and the counts per status."""
    ids = await demo_checkouts(client)
    await sign_in(client)

    response = await client.get("/dashboard")

    assert response.status_code == 200
    page = response.text
    assert SIGN_IN_FORM not in page
    for order_id, saga_id in ids.items():
        assert f'<a href="/dashboard/sagas/{saga_id}">{saga_id[:12]}</a>' in page
        assert f"<td>{order_id}</td>" in page
    assert '<a href="/dashboard?status=completed">completed <b>1</b></a>' in page
    assert '<a href="/dashboard?status=compensated">compensated <b>2</b></a>' in page
    assert '<a href="/dashboard?status=failed">failed <b>0</b></a>' in page
    assert "Invalid shipping address" in page


async def test_signed_in_list_filtered_by_status_shows_only_that_status(
    client: httpx.AsyncClient,
) -> None:
    """``/dashboard?status=completed`` lists order1's saga and not the compensated ones."""
    ids = await demo_checkouts(client)
    await sign_in(client)

    page = (await client.get("/dashboard", params={"status": "completed"})).text

    assert ids["order1"][:12] in page
    assert ids["order2"][:12] not in page
    assert ids["order3"][:12] not in page


async def test_forged_cookie_holding_the_token_is_not_signed_in(
    client: httpx.AsyncClient,
) -> None:
    """A cookie that holds the raw token (not its HMAC) is not a session."""
    await demo_checkouts(client)
    client.cookies.set("sagakit_admin", TOKEN)

    assert SIGN_IN_FORM in (await client.get("/dashboard")).text


async def test_logout_forgets_the_session(client: httpx.AsyncClient) -> None:
    """After signing out the list asks for the token again."""
    await sign_in(client)

    response = await client.post("/dashboard/logout")

    assert response.status_code == 303
    assert SIGN_IN_FORM in (await client.get("/dashboard")).text


async def test_saga_page_shows_the_steps_and_the_failed_steps_error(
    client: httpx.AsyncClient,
) -> None:
    """order3's saga page lists its three steps, their statuses and shipping's error."""
    saga_id = (await demo_checkouts(client))["order3"]
    await sign_in(client)

    response = await client.get(f"/dashboard/sagas/{saga_id}")

    assert response.status_code == 200
    page = response.text
    assert f"<h1>Saga <span class=id>{saga_id}</span></h1>" in page
    steps = page[page.index("<h2>Steps</h2>") : page.index("<h2>Timeline</h2>")]
    assert '<td>payment</td><td><span class="status compensated">compensated</span>' in steps
    assert '<td>inventory</td><td><span class="status compensated">compensated</span>' in steps
    assert '<td>shipping</td><td><span class="status failed">failed</span>' in steps
    assert "<td>Invalid shipping address</td>" in steps
    assert "Retry compensation" not in page


async def test_saga_page_of_an_unknown_saga_answers_404(client: httpx.AsyncClient) -> None:
    """Signed in, the page of a saga that does not exist answers 404."""
    await sign_in(client)

    response = await client.get("/dashboard/sagas/nosuchsaga")

    assert response.status_code == 404
    assert "No saga nosuchsaga" in response.text


async def test_saga_page_of_a_failed_saga_offers_retry_and_escapes_the_error(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A failed saga's page has the retry button and shows its error as text, not markup."""
    saga_id, _ = await failed_saga(app)
    await sign_in(client)

    page = (await client.get(f"/dashboard/sagas/{saga_id}")).text

    assert f'<form method=post action="/dashboard/sagas/{saga_id}/retry">' in page
    assert "undo is &lt;broken&gt;" in page
    assert "<broken>" not in page


async def test_dashboard_retry_signed_out_answers_401(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The dashboard's retry refuses a request without a session with 401."""
    saga_id, _ = await failed_saga(app)

    response = await client.post(f"/dashboard/sagas/{saga_id}/retry", headers=SAME_ORIGIN)

    error_of(response, 401)
    assert json_of(await client.get(f"/sagas/{saga_id}", headers=ADMIN))["status"] == "failed"


CROSS_ORIGIN = {
    "none": {},
    "other-origin": {"Origin": "http://evil.example"},
    "other-referer": {"Referer": "http://evil.example/dashboard/sagas/x"},
    "suffixed-host": {"Origin": "http://testserver.evil.example"},
    "null-origin": {"Origin": "null"},
}


async def test_dashboard_retry_from_another_origin_answers_403(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Signed in, the retry action refuses a request not from this origin with 403."""
    saga_id, set_up = await failed_saga(app)
    set_up.broken = False
    await sign_in(client)

    responses = {
        name: await client.post(f"/dashboard/sagas/{saga_id}/retry", headers=headers)
        for name, headers in CROSS_ORIGIN.items()
    }

    assert {n: r.status_code for n, r in responses.items()} == dict.fromkeys(CROSS_ORIGIN, 403)
    assert {error_of(r, 403) for r in responses.values()} == {"cross-origin request refused"}
    assert json_of(await client.get(f"/sagas/{saga_id}", headers=ADMIN))["status"] == "failed"


@pytest.mark.parametrize(
    "headers",
    [SAME_ORIGIN, {"Referer": "http://testserver/dashboard/sagas/x"}],
    ids=["origin", "referer"],
)
async def test_dashboard_retry_from_this_origin_resumes_the_saga(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """Signed in and same-origin, retry redirects to the saga, which then ends compensated."""
    saga_id, set_up = await failed_saga(app)
    set_up.broken = False
    await sign_in(client)

    response = await client.post(f"/dashboard/sagas/{saga_id}/retry", headers=headers)

    assert response.status_code == 303
    assert response.headers["location"] == f"/dashboard/sagas/{saga_id}"
    assert (await settled_saga(client, saga_id))["status"] == "compensated"
    events = (await client.get(f"/sagas/{saga_id}", headers=ADMIN)).json()["events"]
    retries = [e["detail"] for e in events if e["type"] == "operator_retry"]
    assert retries == [f"retry requested by {actor_of(client)}"]


async def test_dashboard_retry_of_a_saga_that_is_not_failed_shows_why_with_409(
    client: httpx.AsyncClient,
) -> None:
    """Retrying a completed saga answers its page with the reason (409); nothing changes."""
    saga_id = (await demo_checkouts(client))["order1"]
    await sign_in(client)

    response = await client.post(f"/dashboard/sagas/{saga_id}/retry", headers=SAME_ORIGIN)

    refused_on_the_page(response, 409, saga_id)
    assert json_of(await client.get(f"/sagas/{saga_id}", headers=ADMIN))["status"] == "completed"


FRAGMENT = {"X-Dashboard-Fragment": "live"}


class After(Step):
    """Succeeds at once; its compensation has nothing to undo."""

    name = "after"

    async def do(self, ctx: StepContext) -> JSON:
        return {"after": True}


async def running_saga(app: FastAPI) -> tuple[str, Held]:
    """Start a saga that stays running until its ``Held`` step's gate is opened."""
    held = Held()
    orchestrator: SagaOrchestrator = app.state.service.orchestrator
    orchestrator.register(Saga("held", [held, After()]))
    started = await orchestrator.start("held", {"purpose": "test"})
    return started.instance.saga_id, held


async def test_saga_page_of_a_running_saga_offers_cancel_and_refreshes_itself(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A running saga's page has the cancel button (with a confirmation) and a refresh period."""
    saga_id, held = await running_saga(app)
    await sign_in(client)

    page = (await client.get(f"/dashboard/sagas/{saga_id}")).text
    held.gate.set()

    assert f'<form method=post action="/dashboard/sagas/{saga_id}/cancel" data-confirm=' in page
    assert '<div id=live data-refresh="2">' in page
    assert "Retry compensation" not in page
    assert "Mark resolved" not in page


async def test_dashboard_cancel_from_this_origin_compensates_the_running_saga(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Signed in and same-origin, cancel redirects to the saga, which then ends compensated."""
    saga_id, held = await running_saga(app)
    await sign_in(client)

    response = await client.post(f"/dashboard/sagas/{saga_id}/cancel", headers=SAME_ORIGIN)
    held.gate.set()

    assert response.status_code == 303
    assert response.headers["location"] == f"/dashboard/sagas/{saga_id}"
    body = await settled_saga(client, saga_id)
    assert body["status"] == "compensated"
    assert body["error"] == "cancelled by an operator"
    events = json_of(await client.get(f"/sagas/{saga_id}", headers=ADMIN))["events"]
    assert isinstance(events, list)
    assert [e["detail"] for e in events if e["type"] == "operator_cancel"] == [
        f"cancel requested by {actor_of(client)}"
    ]


async def test_dashboard_cancel_of_a_finished_saga_shows_why_with_409(
    client: httpx.AsyncClient,
) -> None:
    """Cancelling a completed saga answers its page with the reason (409); nothing changes."""
    saga_id = (await demo_checkouts(client))["order1"]
    await sign_in(client)

    response = await client.post(f"/dashboard/sagas/{saga_id}/cancel", headers=SAME_ORIGIN)

    refused_on_the_page(response, 409, saga_id)
    assert json_of(await client.get(f"/sagas/{saga_id}", headers=ADMIN))["status"] == "completed"


async def test_saga_page_of_a_failed_saga_asks_a_reason_to_resolve_it(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A failed saga's page offers "mark resolved" with a required reason, and does not refresh."""
    saga_id, _ = await failed_saga(app)
    await sign_in(client)

    page = (await client.get(f"/dashboard/sagas/{saga_id}")).text

    assert f'<form class=resolve method=post action="/dashboard/sagas/{saga_id}/resolve">' in page
    assert "<input name=reason required maxlength=500" in page
    assert '<div id=live data-refresh="0">' in page
    assert "Needs an operator" in page


async def test_dashboard_resolve_marks_the_failed_saga_compensated_with_its_reason(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Resolve with a reason redirects to the saga, now compensated, its history keeping why."""
    saga_id, _ = await failed_saga(app)
    await sign_in(client)

    response = await client.post(
        f"/dashboard/sagas/{saga_id}/resolve",
        data={"reason": "  refunded by hand,\n ticket 42 "},
        headers=SAME_ORIGIN,
    )

    assert response.status_code == 303
    assert response.headers["location"] == f"/dashboard/sagas/{saga_id}"
    body = json_of(await client.get(f"/sagas/{saga_id}", headers=ADMIN))
    assert body["status"] == "compensated"
    events = body["events"]
    assert isinstance(events, list)
    assert [e["detail"] for e in events if e["type"] == "operator_resolved"] == [
        f"resolved by {actor_of(client)}: refunded by hand, ticket 42"
    ]


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501], ids=["empty", "blank", "too-long"])
async def test_dashboard_resolve_without_a_usable_reason_answers_422(
    app: FastAPI, client: httpx.AsyncClient, reason: str
) -> None:
    """Resolve with an empty, blank or over-long reason answers 422 and leaves the saga failed."""
    saga_id, _ = await failed_saga(app)
    await sign_in(client)

    response = await client.post(
        f"/dashboard/sagas/{saga_id}/resolve", data={"reason": reason}, headers=SAME_ORIGIN
    )

    assert "reason" in refused_on_the_page(response, 422, saga_id)
    assert json_of(await client.get(f"/sagas/{saga_id}", headers=ADMIN))["status"] == "failed"


@pytest.mark.parametrize("action", ["cancel", "resolve"])
async def test_dashboard_actions_signed_out_or_from_another_origin_are_refused(
    app: FastAPI, client: httpx.AsyncClient, action: str
) -> None:
    """Cancel and resolve answer 401 without a session and 403 from another origin."""
    saga_id, held = await (running_saga(app) if action == "cancel" else failed_saga(app))
    url = f"/dashboard/sagas/{saga_id}/{action}"
    form = {"reason": "because"}

    signed_out = await client.post(url, data=form, headers=SAME_ORIGIN)
    await sign_in(client)
    elsewhere = await client.post(url, data=form, headers={"Origin": "http://evil.example"})
    if isinstance(held, Held):
        held.gate.set()

    error_of(signed_out, 401)
    assert error_of(elsewhere, 403) == "cross-origin request refused"
    events = json_of(await client.get(f"/sagas/{saga_id}", headers=ADMIN))["events"]
    assert isinstance(events, list)
    assert not [e for e in events if str(e["type"]).startswith("operator_")]


async def test_live_fragments_are_the_live_region_alone(client: httpx.AsyncClient) -> None:
    """Asked for its live region, the list and a saga's page answer that region, no page."""
    saga_id = (await demo_checkouts(client))["order3"]
    await sign_in(client)

    listing = await client.get("/dashboard", headers=FRAGMENT)
    saga = await client.get(f"/dashboard/sagas/{saga_id}", headers=FRAGMENT)

    for response in (listing, saga):
        assert response.status_code == 200
        assert response.text.startswith("<div id=live data-refresh=")
        assert "<html" not in response.text
        assert "X-Dashboard-Fragment" in response.headers["vary"]
    assert saga_id[:12] in listing.text
    assert "Invalid shipping address" in saga.text


async def test_live_fragment_signed_out_answers_401_without_a_page(
    client: httpx.AsyncClient,
) -> None:
    """Signed out, a live fragment answers an empty 401 (the script then reloads the page)."""
    response = await client.get("/dashboard", headers=FRAGMENT)

    assert response.status_code == 401
    assert response.text == ""


async def test_dashboard_pages_allow_only_their_own_nonced_code_and_no_framing(
    client: httpx.AsyncClient,
) -> None:
    """Each page's CSP allows only its own style and script (by a fresh nonce) and no framing."""
    await sign_in(client)

    first = await client.get("/dashboard")
    second = await client.get("/dashboard")

    nonces = []
    for response in (first, second):
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        found = re.search(r"script-src 'nonce-([^']+)'", csp)
        assert found
        nonces.append(found.group(1))
        assert f'<script nonce="{found.group(1)}">' in response.text
        assert response.headers["cache-control"] == "no-store"
    assert nonces[0] != nonces[1]


async def test_list_filtered_by_order_shows_only_that_orders_saga(
    client: httpx.AsyncClient,
) -> None:
    """``?key=order2`` lists order2's saga only, and keeps the filter open in the form."""
    ids = await demo_checkouts(client)
    await sign_in(client)

    page = (await client.get("/dashboard", params={"key": "order2"})).text

    assert ids["order2"][:12] in page
    assert ids["order1"][:12] not in page
    assert ids["order3"][:12] not in page
    assert "<details class=filters open>" in page
    assert 'name=key value="order2"' in page


async def test_list_filtered_by_start_time_shows_only_sagas_started_in_range(
    client: httpx.AsyncClient,
) -> None:
    """Sagas started before "from" are left out, and an unreadable date is named and ignored."""
    ids = await demo_checkouts(client)
    await sign_in(client)

    future = (await client.get("/dashboard", params={"created_after": "2999-01-01T00:00"})).text
    past = (await client.get("/dashboard", params={"created_after": "2000-01-01T00:00"})).text
    garbled = (await client.get("/dashboard", params={"created_before": "yesterday"})).text

    assert "No saga matches." in future
    assert all(saga_id[:12] in past for saga_id in ids.values())
    assert "Not a date and time, ignored: yesterday" in garbled
    assert all(saga_id[:12] in garbled for saga_id in ids.values())


async def test_dashboard_counts_follow_the_filters(client: httpx.AsyncClient) -> None:
    """The status chips count the sagas the name and key filters match, not all of them."""
    await demo_checkouts(client)
    await sign_in(client)

    everything = (await client.get("/dashboard")).text
    one_order = (await client.get("/dashboard", params={"key": "order3"})).text
    nothing = (await client.get("/dashboard", params={"name": "nothing"})).text

    assert re.search(r">all <b>3</b>", everything)
    assert re.search(r">all <b>1</b>", one_order)
    assert re.search(r">compensated <b>1</b>", one_order)
    assert re.search(r">completed <b>0</b>", one_order)
    assert re.search(r">all <b>0</b>", nothing)


class Quick(Step):
    """Succeeds at once."""

    name = "quick"

    async def do(self, ctx: StepContext) -> JSON:
        return None


def page_ids(html: str) -> list[str]:
    """The (shortened) saga ids a list page shows, in order."""
    return re.findall(r'<a href="/dashboard/sagas/([0-9a-f]+)">', html)


def link(html: str, label: str) -> str | None:
    """The href of the pager link whose text starts with ``label``, if there is one."""
    found = re.search(rf'<a href="([^"]+)">{re.escape(label)}', html)
    return found.group(1).replace("&amp;", "&") if found else None


async def test_dashboard_pages_go_older_then_newer_and_back_to_the_newest(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """120 sagas: older, older, then newer twice comes back to the first page; newest too."""
    orchestrator: SagaOrchestrator = app.state.service.orchestrator
    orchestrator.register(Saga("quick", [Quick()]))
    for n in range(120):
        await orchestrator.wait((await orchestrator.start("quick", {"n": n})).saga_id, 5.0)
    await sign_in(client)

    first = (await client.get("/dashboard", params={"name": "quick"})).text
    assert link(first, "← Newer") is None
    second = (await client.get(str(link(first, "Older →")))).text
    third = (await client.get(str(link(second, "Older →")))).text
    assert link(third, "Older →") is None
    back = (await client.get(str(link(third, "← Newer")))).text
    front = (await client.get(str(link(back, "← Newer")))).text
    newest = (await client.get(str(link(third, "« Newest")))).text

    assert [len(page_ids(p)) for p in (first, second, third)] == [50, 50, 20]
    assert page_ids(back) == page_ids(second)
    assert page_ids(front) == page_ids(first) == page_ids(newest)
    assert "name=quick" in str(link(third, "← Newer"))


async def test_a_resolved_saga_and_its_steps_read_as_resolved(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Resolved by hand: the page says so, and the step left uncompensated reads resolved."""
    saga_id, _ = await failed_saga(app)
    await sign_in(client)
    resolved = await client.post(
        f"/sagas/{saga_id}/resolve", json={"reason": "refunded by hand"}, headers=ADMIN
    )
    assert resolved.status_code == 200

    page = (await client.get(f"/dashboard/sagas/{saga_id}")).text
    steps = page.split("<table class=steps>")[1].split("</table>")[0]

    assert "resolved by hand" in page
    assert 'class="status resolved"' in steps
    assert "compensating" not in steps
    assert "undo is &lt;broken&gt;" not in steps  # no longer the step's current error


def test_a_step_error_shows_only_while_it_is_current() -> None:
    """A step that succeeded after a retry, or was compensated, shows no last error."""
    from sagakit.api.dashboard.parts import steps_table
    from sagakit.records import StepRecord, StepStatus

    def step(status: StepStatus) -> StepRecord:
        return StepRecord(index=0, name="pay", status=status, attempts=2, error="timed out")

    assert "timed out" not in steps_table([step(StepStatus.SUCCEEDED)])
    assert "timed out" not in steps_table([step(StepStatus.COMPENSATED)])
    assert "timed out" in steps_table([step(StepStatus.FAILED)])
    assert "timed out" in steps_table([step(StepStatus.COMPENSATING)])


def test_the_saga_error_is_hidden_while_an_operators_retry_runs() -> None:
    """Compensating again after ``operator_retry``: the old error is not the current one."""
    from sagakit.api.dashboard.parts import current_error
    from sagakit.records import SagaEvent, SagaInstance, SagaStatus

    saga = SagaInstance(
        saga_id="s", name="n", version=1, status=SagaStatus.COMPENSATING, input={}, steps=()
    ).evolve(error="refund refused")
    failed = [SagaEvent(type="saga_failed")]
    retried = [*failed, SagaEvent(type="operator_retry")]

    assert current_error(saga, failed) == "refund refused"
    assert current_error(saga, retried) is None
    assert current_error(saga.evolve(status=SagaStatus.FAILED), retried) == "refund refused"


async def test_bulk_retry_retries_every_failed_saga_the_filters_match_once_confirmed(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Two failed sagas of one name: the list offers to retry both; posting retries them."""
    from tests.api.support import FRAGILE, fragile_saga

    saga, set_up = fragile_saga()
    orchestrator: SagaOrchestrator = app.state.service.orchestrator
    orchestrator.register(saga)
    ids = []
    for n in range(2):
        started = await orchestrator.start(FRAGILE, {"n": n})
        ids.append((await orchestrator.wait(started.saga_id, 5.0)).saga_id)
    set_up.broken = False
    await sign_in(client)

    listing = (await client.get("/dashboard", params={"name": FRAGILE})).text
    other = (await client.get("/dashboard", params={"name": "checkout"})).text
    posted = await client.post(
        "/dashboard/retry-failed", data={"name": FRAGILE}, headers=SAME_ORIGIN
    )
    after = (await client.get(posted.headers["location"])).text
    ended = [(await settled_saga(client, i))["status"] for i in ids]

    assert "Retry all 2 failed sagas" in listing
    assert 'data-confirm="Retry the compensation of 2 failed sagas' in listing
    assert "Retry all" not in other
    assert posted.status_code == 303
    assert "retried=2" in posted.headers["location"]
    assert "Retry started for 2 failed sagas." in after
    assert ended == ["compensated", "compensated"]


async def test_bulk_retry_from_another_origin_or_a_viewer_is_refused(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The bulk action needs an admin and a same-origin request, like the others."""
    await failed_saga(app)
    await sign_in(client)
    elsewhere = await client.post("/dashboard/retry-failed", headers={"Origin": "http://evil"})
    assert elsewhere.status_code == 403
    page = json_of(await client.get("/sagas", params={"status": "failed"}, headers=ADMIN))
    assert len(page["sagas"]) == 1  # type: ignore[arg-type]
