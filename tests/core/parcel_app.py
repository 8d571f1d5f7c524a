"""An application's own sagas, for the tests that run them in real processes.

Every effect is appended to the file ``$PARCEL_LEDGER`` as ``<step> <idempotency key>``;
``$PARCEL_CRASH_IN`` names a step whose action kills its process with SIGKILL after
recording its effect (the effect done, its result never stored).
"""

from __future__ import annotations

import os
import signal

from sagakit import JSON, Saga, StepContext, step


def _record(what: str, ctx: StepContext) -> None:
    with open(os.environ["PARCEL_LEDGER"], "a", encoding="utf-8") as ledger:
        ledger.write(f"{what} {ctx.idempotency_key}\n")


@step("reserve")
async def reserve(ctx: StepContext) -> JSON:
    """Reserve the parcel's items."""
    _record("reserve", ctx)
    return {"reserved": ctx.input["items"]}


@step("ship")
async def ship(ctx: StepContext) -> JSON:
    """Ship the parcel (the step a test may crash in)."""
    _record("ship", ctx)
    if os.environ.get("PARCEL_CRASH_IN") == "ship":
        os.kill(os.getpid(), signal.SIGKILL)
    return {"tracking": f"T-{ctx.saga_id[:8]}"}


PARCEL = Saga("parcel", [reserve, ship])
SAGAS = [PARCEL]


def sagas() -> list[Saga]:
    """The same sagas, from a function (``--app tests.core.parcel_app:sagas``)."""
    return SAGAS
