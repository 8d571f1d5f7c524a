"""Group commit: callers submit items one by one; a few flushers write them in batches.

While a batch is being written, new items queue up; the next flush takes all of them. Under
load this turns many small transactions (one commit and one fsync each) into few large ones,
without delaying a lone caller: an item that finds a free flusher is written at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """Batches submitted items through at most ``flushers`` concurrent ``flush`` calls.

    ``flush`` writes one batch and returns one outcome per item, in order: a value, or an
    exception that only that item's caller receives.
    """

    def __init__(
        self,
        flush: Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]],
        *,
        flushers: int = 2,
        max_batch: int = 500,
    ) -> None:
        self._flush = flush
        self._flushers = flushers
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._active = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        """Write ``item`` in the next batch; return its outcome once the batch is committed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._active < self._flushers:
            self._active += 1
            task = asyncio.create_task(self._drain(), name="sagakit-group-commit")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._write(batch)
        finally:
            self._active -= 1

    async def _write(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            outcomes = await self._flush([item for item, _ in batch])
        except BaseException as exc:  # every caller of the batch learns why
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
