"""Dashboard sessions across two real ``sagakit serve`` processes on one PostgreSQL database."""

from __future__ import annotations

import httpx

from tests.processes import ADMIN_TOKEN
from tests.scaleout.conftest import Cluster

COOKIE = "sagakit_session"


async def test_a_session_made_on_one_process_works_on_another_and_ends_on_both(
    cluster: Cluster,
) -> None:
    """Signed in on A, the cookie opens B's dashboard; signed out on B, A refuses it too."""
    first = await cluster.serve(env={"SAGAKIT_DEMO_DATA": "false"})
    second = await cluster.serve(env={"SAGAKIT_DEMO_DATA": "false"})
    async with httpx.AsyncClient(base_url=first.url) as on_first:
        signed = await on_first.post("/dashboard/login", data={"token": ADMIN_TOKEN})
        assert signed.status_code == 303, signed.text
        cookie = on_first.cookies[COOKIE]
        async with httpx.AsyncClient(base_url=second.url, cookies={COOKIE: cookie}) as on_second:
            assert (await on_second.get("/dashboard")).status_code == 200
            rows = await cluster.integer("SELECT count(*) FROM sagakit_sessions")
            assert rows == 1

            assert (await on_second.post("/dashboard/logout")).status_code == 303

        refused = await on_first.get("/dashboard")
        assert refused.status_code == 401
        assert await cluster.integer("SELECT count(*) FROM sagakit_sessions") == 0
