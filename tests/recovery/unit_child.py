"""``python -m tests.recovery.unit_child URL ORDER POINT``: one checkout as one unit, killed.

The child opens the demo shop at ``URL``, checks ``ORDER`` out with the one-unit path
forced, and kills itself with SIGKILL at ``POINT``: a crash point of a step inside the
unit (``before_do:payment``, ...), or ``after_commit`` (in a listener, once the unit is
durable). ``none`` kills nothing: it prints the saga's status and exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import SagaEvent, SagaInstance
from sagakit.service import opened_stores
from sagakit.shop.checkout import checkout_input
from sagakit.shop.local_participants import checkout_saga
from tests.faults import crash_probe


def kill_after_commit(instance: SagaInstance, events: Sequence[SagaEvent]) -> None:
    """A listener: listeners hear of a transition once it is durable, so die there."""
    os.kill(os.getpid(), signal.SIGKILL)


async def main(url: str, order_id: str, point: str) -> None:
    """Check ``order_id`` out once, dying at ``point``."""
    async with opened_stores(url) as (store, shop):
        await shop.load_demo_data()
        orch = SagaOrchestrator(
            store,
            [checkout_saga(shop)],
            probe=crash_probe(point) if ":" in point else None,
            listeners=[kill_after_commit] if point == "after_commit" else [],
            one_unit=True,
        )
        order = await shop.get_order(order_id)
        assert order is not None
        handle = await orch.start("checkout", checkout_input(order), business_key=order_id)
        print((await handle.result(timeout=10)).status, flush=True)
        await orch.shutdown()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
