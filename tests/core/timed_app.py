"""Sagas with durable time, for the tests that run them in processes that die.

``nap``: reserve, sleep one second, ship (``ship`` appends to ``$TIMED_LEDGER``).
``slow``: reserve, then wait for an ``approved`` signal that never comes, under a saga-wide
deadline of one second.
"""

from __future__ import annotations

import os

from sagakit import JSON, Saga, Sleep, StepContext, WaitFor, step


def _record(what: str, ctx: StepContext) -> None:
    with open(os.environ["TIMED_LEDGER"], "a", encoding="utf-8") as ledger:
        ledger.write(f"{what} {ctx.idempotency_key}\n")


@step("reserve")
async def reserve(ctx: StepContext) -> JSON:
    """Reserve (its undo is recorded)."""
    _record("reserve", ctx)
    return None


@reserve.compensation
async def release(ctx: StepContext) -> None:
    """Release what ``reserve`` held."""
    _record("release", ctx)


@step("ship")
async def ship(ctx: StepContext) -> JSON:
    """Ship, after the nap."""
    _record("ship", ctx)
    return None


NAP = Saga("nap", [reserve, Sleep("cool-off", 1.0), ship])
SLOW = Saga("slow", [reserve, WaitFor("approval", signal="approved", deadline=None)], deadline=1.0)
SAGAS = [NAP, SLOW]
