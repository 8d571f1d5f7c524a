"""Crashes in the window that local actions close: after an action, before its result is recorded.

With ``SAGAKIT_LOCAL_STEPS=false`` each participant commits its effect on its own, as a
remote participant would, and the saga records the result in a later transaction. A kill
between the two must be healed by the participant's inbox: the step runs again with the
same idempotency key and applies nothing twice.
"""

from __future__ import annotations

import httpx
import pytest

from tests.recovery.conftest import Sagakit, wait_saga_finished
from tests.recovery.test_crash import KILLED, inbox

SEPARATE = {"SAGAKIT_LOCAL_STEPS": "false"}


@pytest.mark.parametrize("step", ["payment", "inventory", "shipping"])
async def test_kill_after_an_effect_before_its_record_replays_it_without_a_second_effect(
    sagakit: Sagakit, step: str
) -> None:
    """Killed between a committed effect and its record, order1 still completes, charged once."""
    doomed = await sagakit.serve(crash_at=f"after_do:{step}", env=SEPARATE)
    async with doomed.client() as client:
        with pytest.raises(httpx.TransportError):
            await client.post("/checkout/order1")
    assert await doomed.wait(10.0) == KILLED, doomed.output()
    [saga_id] = sagakit.saga_ids("order1")
    assert sagakit.active_sagas() == 1, "the effect is committed but its record is not"
    recorded = sagakit.rows(
        "SELECT status FROM saga_steps WHERE saga_id = ? AND name = ?", (saga_id, step)
    )
    assert recorded == [("running",)]

    restarted = await sagakit.serve(env=SEPARATE)
    async with restarted.client() as client:
        saga = await wait_saga_finished(client, saga_id)

    assert saga["status"] == "completed"
    steps = saga["steps"]
    assert isinstance(steps, list)
    assert [s["attempts"] for s in steps if s["name"] == step] == [2]
    assert inbox(sagakit, "payments") == [(f"{saga_id}:payment", "charged")]
    assert inbox(sagakit, "reservations") == [(f"{saga_id}:inventory", "reserved")]
    assert inbox(sagakit, "shipments") == [(f"{saga_id}:shipping", "shipped")]
    assert sagakit.balance("user1") == 100 - 20
    assert sagakit.stock("item1") == 5 - 2
