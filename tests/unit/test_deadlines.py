"""Step timeouts on one timer (``sagakit.run.within`` and ``Deadlines``) behave as
``asyncio.timeout`` does."""

from __future__ import annotations

import asyncio
import time

import pytest

from sagakit.run import Deadlines, within


async def _forever() -> None:
    await asyncio.sleep(60)


async def _quick() -> int:
    await asyncio.sleep(0)
    return 7


async def test_an_await_past_its_deadline_raises_timeout_error() -> None:
    deadlines = Deadlines()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await within(0.05, _forever(), deadlines)
    assert 0.04 <= time.monotonic() - started < 1.0
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_quick_await_returns_its_value_and_leaves_no_deadline() -> None:
    deadlines = Deadlines()
    assert await within(10.0, _quick(), deadlines) == 7
    assert all(not queue for queue in deadlines._queues.values())


async def test_different_durations_each_expire_at_their_own_deadline() -> None:
    deadlines = Deadlines()

    async def timed(seconds: float) -> float:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await within(seconds, _forever(), deadlines)
        return time.monotonic() - started

    # The longer one is added first: the timer must be moved earlier for the shorter one.
    long, short, done = await asyncio.gather(
        timed(0.3), timed(0.05), within(5.0, _quick(), deadlines)
    )
    assert 0.04 <= short < 0.25 <= long < 2.0
    assert done == 7


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    deadlines = Deadlines()
    task = asyncio.create_task(within(5.0, _forever(), deadlines))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(not queue for queue in deadlines._queues.values())


def test_on_another_loop_it_still_expires() -> None:
    deadlines = Deadlines()

    async def once() -> None:
        with pytest.raises(TimeoutError):
            await within(0.05, _forever(), deadlines)

    asyncio.run(once())
    asyncio.run(once())  # a second loop: a timer of that loop's own
