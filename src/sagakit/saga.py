"""Saga definitions: steps, their policies, and the context they run with. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sagakit.records import JSON, JSONObject
from sagakit.retry import DEFAULT_COMPENSATION_RETRY, DEFAULT_RETRY, RetryPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class StepContext:
    """What a step's ``do`` or ``compensate`` is given.

    ``idempotency_key`` is the same for every attempt of this step in this saga, across
    crashes and processes: participants deduplicate by it. ``result`` is this step's own
    stored result (only in ``compensate``; ``None`` when the action's outcome is unknown).
    """

    saga_id: str
    saga_name: str
    step: str
    input: JSONObject
    results: Mapping[str, JSON]
    idempotency_key: str
    attempt: int
    result: JSON = None


class Step:
    """One unit of a saga: ``do`` performs it, ``compensate`` undoes it.

    Subclass it and set ``name``. ``do`` raises :class:`~sagakit.errors.StepFailed` for a
    business rejection; any other exception is transient and retried per ``retry``.
    ``compensate`` must be idempotent and a no-op when ``do`` never applied anything.
    """

    name: str = ""
    retry: RetryPolicy = DEFAULT_RETRY
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    #: Seconds one attempt of ``do`` or ``compensate`` may take; ``None`` for no limit.
    timeout: float | None = 30.0

    async def do(self, ctx: StepContext) -> JSON:
        """Perform the step; the value returned is stored and passed on."""
        raise NotImplementedError

    async def compensate(self, ctx: StepContext) -> None:
        """Undo the step. The default does nothing (for steps with nothing to undo)."""

    def local_action(self, ctx: StepContext, store: object) -> object | None:
        """The action as a *local action* of ``store``, or ``None`` to run :meth:`do`.

        A participant that keeps its tables in the saga store's own database can return a
        function the store runs inside the transaction that records the step's outcome:
        its effect, its inbox row, "step succeeded" and "next step started" commit
        together, or not at all. Each store says what it accepts (``SqliteStore``: a
        ``SqliteAction``; ``PostgresStore``: a ``PostgresAction``). The action raises
        ``StepFailed`` for a business refusal, as ``do`` does: what it wrote before that
        (its inbox row recording the refusal) is kept, and no success is recorded.
        """
        return None


@dataclass(frozen=True, slots=True)
class Saga:
    """A named, versioned, ordered list of steps."""

    name: str
    steps: Sequence[Step]
    version: int = 1
    step_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(step.name for step in self.steps)
        if not self.name:
            raise ValueError("a saga needs a name")
        if not names or any(not n for n in names):
            raise ValueError(f"saga {self.name!r}: every step needs a name")
        if len(set(names)) != len(names):
            raise ValueError(f"saga {self.name!r}: step names must be unique")
        object.__setattr__(self, "step_names", names)
