"""An application's own sagas, for ``sagakit sagas ... --app tests.acceptance.ops_app:SAGAS``.

``booking``: hold a seat, wait for the ``approved`` signal, then book (refused when the input
says ``refuse``). ``RELEASE_FAILS`` makes the hold's release fail (a test's process sets it;
the CLI's does not), so that a saga can be left ``failed`` for the CLI to retry.
"""

from __future__ import annotations

from sagakit import JSON, RetryPolicy, Saga, StepContext, StepFailed, WaitFor, step

RELEASE_FAILS = False


@step("hold", compensation_retry=RetryPolicy(max_attempts=1, initial_delay=0.0))
async def hold(ctx: StepContext) -> JSON:
    """Hold a seat."""
    return {"seat": "12A"}


@hold.compensation
async def release(ctx: StepContext) -> None:
    """Release the seat (fails while ``RELEASE_FAILS``)."""
    if RELEASE_FAILS:
        raise RuntimeError("the seat service is down")


@step("book")
async def book(ctx: StepContext) -> JSON:
    """Book the held seat."""
    if ctx.input.get("refuse"):
        raise StepFailed("no seats left")
    return {"booking": f"B-{ctx.saga_id[:6]}"}


BOOKING = Saga("booking", [hold, WaitFor("approval", signal="approved", deadline=None), book])
SAGAS = [BOOKING]
