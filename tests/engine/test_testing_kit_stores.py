"""sagakit.testing's ``restart`` on every store: a crashed saga is recovered at once."""

from __future__ import annotations

import pytest

from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import SagaStatus
from sagakit.store import SagaStore
from sagakit.testing import CrashAt, EffectLedger, SimulatedCrash, restart
from tests.unit.test_testing_kit import GOOD, STEPS, order_saga


async def test_restart_recovers_a_crashed_saga_on_every_store(store: SagaStore) -> None:
    """``restart`` lets the dead process's lease go, so a new one recovers the saga at once."""
    ledger = EffectLedger()
    crashed = SagaOrchestrator(store, [order_saga(ledger)], probe=CrashAt("after_do:reserve"))
    handle = await crashed.start("order", GOOD)
    with pytest.raises(SimulatedCrash):
        await crashed.wait(handle.saga_id)

    successor = await restart(crashed)
    try:
        assert successor.owner != crashed.owner
        assert handle.saga_id in successor.driving
        ended = await successor.wait(handle.saga_id, timeout=5)
    finally:
        await successor.shutdown()

    assert ended.status is SagaStatus.COMPLETED
    ledger.assert_applied_once(*STEPS)
