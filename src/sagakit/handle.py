"""A handle on one started saga: what ``SagaOrchestrator.start`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sagakit.records import SagaInstance, StartResult

if TYPE_CHECKING:
    from sagakit.orchestrator import SagaOrchestrator


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaHandle(StartResult):
    """A :class:`StartResult` that can wait for its saga's outcome.

    ``instance`` is the saga as it stood when it was started (or found, for a business
    key already taken); ``created`` says whether this call started it.
    """

    orchestrator: SagaOrchestrator = field(repr=False, compare=False)

    @property
    def saga_id(self) -> str:
        """The saga's id."""
        return self.instance.saga_id

    async def result(self, timeout: float | None = None) -> SagaInstance:
        """The saga once it has ended: ``completed``, ``compensated`` or ``failed``.

        Raises ``TimeoutError`` if it is still running or compensating after ``timeout``
        seconds (``None`` waits as long as it takes).
        """
        if not self.instance.status.is_active:
            return self.instance  # it ended before start answered (as one unit): no read
        ended = await self.orchestrator.wait(self.saga_id, timeout)
        if ended.status.is_active:
            raise TimeoutError(f"saga {self.saga_id} is still {ended.status} after {timeout}s")
        return ended
