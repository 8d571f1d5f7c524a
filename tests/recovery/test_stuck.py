"""A saga whose owner was SIGKILLed, seen as stuck by the API, the dashboard and the metrics."""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.processes import ADMIN_HEADERS
from tests.recovery.conftest import Sagakit

#: A lease long enough that the watcher cannot take the dead owner's saga over while the test
#: looks (its first recovery poll runs at its start); stuck after 2 s without progress.
LONG_LEASE = {"SAGAKIT_LEASE_SECONDS": "120"}
WATCHER = {**LONG_LEASE, "SAGAKIT_POLL_SECONDS": "3600", "SAGAKIT_STUCK_AFTER_SECONDS": "2"}


async def test_a_saga_whose_owner_was_killed_shows_stuck_with_owner_and_lease(
    sagakit: Sagakit,
) -> None:
    """API, dashboard and metrics all show the dead owner's saga as stuck; cancel says why."""
    doomed = await sagakit.serve(crash_at="before_do:shipping", env=LONG_LEASE)
    async with doomed.client() as http:
        with_error = await asyncio.gather(http.post("/checkout/order1"), return_exceptions=True)
    assert isinstance(with_error[0], httpx.TransportError)  # killed mid-request
    assert (await doomed.wait(10.0)) == -9
    [saga_id] = sagakit.saga_ids("order1")
    watcher = await sagakit.serve(env=WATCHER)
    async with watcher.client() as http:
        await asyncio.sleep(2.5)
        saga = (await http.get(f"/sagas/{saga_id}")).json()
        listed = (await http.get("/sagas", params={"status": "running"})).json()["sagas"]
        page = (await http.get(f"/dashboard/sagas/{saga_id}", headers=ADMIN_HEADERS)).text
        rows = (await http.get("/dashboard", headers=ADMIN_HEADERS)).text
        metrics = (await http.get("/metrics")).text
        cancel = (await http.post(f"/sagas/{saga_id}/cancel")).json()

    owner = saga["owner"]
    assert saga["status"] == "running"
    assert owner
    assert str(doomed.pid) in owner
    assert saga["lease_expires_at"] is not None
    assert saga["stuck"] is True
    assert saga["stuck_reason"].startswith("no progress since")
    assert [s["stuck"] for s in listed if s["saga_id"] == saga_id] == [True]
    assert owner in page
    assert "Stuck" in page
    assert 'class="status stuck"' in rows
    assert re.search(r'^sagakit_stuck_sagas\{saga="checkout"\} 1\.0$', metrics, re.MULTILINE)
    age = re.search(r"^sagakit_oldest_active_saga_age_seconds (\S+)$", metrics, re.MULTILINE)
    assert age
    assert float(age.group(1)) >= 2.0
    assert cancel["status"] == "running"
    assert owner in cancel["note"]
    assert "lease runs out" in cancel["note"]
