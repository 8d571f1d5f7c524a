"""A saga's history as an operator reads it: attempts, compensations and notes, in order.

The store keeps events (``step_started``, ``step_retry``, ``compensation_succeeded``, ...);
this module pairs each attempt's start with its end, so that a row says when an attempt of a
step's action (or of its compensation) started, how long it took, how it ended and why.
A retried attempt starts when the engine recorded it, before the backoff it waits.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final

from sagakit.records import SagaEvent


class Kind(enum.StrEnum):
    """What a timeline row shows."""

    ACTION = "action"
    COMPENSATION = "compensation"
    NOTE = "note"


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One row: an attempt (with its end and result, once known) or a note about the saga."""

    kind: Kind
    at: float
    title: str
    step: str | None = None
    attempt: int | None = None
    ended_at: float | None = None
    result: str | None = None
    detail: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, once ended."""
        return None if self.ended_at is None else max(0.0, self.ended_at - self.at)


#: How each event that ends an attempt names the attempt's result.
ENDS: Final = {
    "step_succeeded": (Kind.ACTION, "succeeded"),
    "step_failed": (Kind.ACTION, "failed"),
    "step_retry": (Kind.ACTION, "error"),
    "step_exhausted": (Kind.ACTION, "gave up"),
    "compensation_succeeded": (Kind.COMPENSATION, "compensated"),
    "compensation_retry": (Kind.COMPENSATION, "error"),
    "compensation_failed": (Kind.COMPENSATION, "gave up"),
}
#: The title of each note.
NOTES: Final = {
    "saga_started": "Saga started",
    "saga_completed": "Saga completed",
    "saga_compensated": "Saga compensated",
    "saga_failed": "Saga failed: an operator is needed",
    "compensation_started": "Compensation started",
    "saga_cancelled": "Cancelled before this step ran",
    "saga_claimed": "Taken over by another process",
    "operator_retry": "Operator: retry",
    "operator_cancel": "Operator: cancel",
    "operator_resolved": "Operator: resolved",
}


class _Builder:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.open: dict[tuple[Kind, str], int] = {}

    def begin(self, kind: Kind, step: str, attempt: int, at: float) -> None:
        self.end(kind, step, "interrupted", None, at)  # a start after a crash
        title = step if kind is Kind.ACTION else f"undo {step}"
        self.open[(kind, step)] = len(self.rows)
        self.rows.append(Row(kind=kind, at=at, title=title, step=step, attempt=attempt))

    def end(self, kind: Kind, step: str, result: str, detail: str | None, at: float) -> bool:
        index = self.open.pop((kind, step), None)
        if index is None:
            return False
        self.rows[index] = replace(self.rows[index], ended_at=at, result=result, detail=detail)
        return True

    def note(self, event: SagaEvent) -> None:
        title = NOTES.get(event.type, event.type.replace("_", " ").capitalize())
        self.rows.append(
            Row(kind=Kind.NOTE, at=event.at, title=title, step=event.step, detail=event.detail)
        )

    def add(self, event: SagaEvent) -> None:
        kind, step, at = event.type, event.step, event.at
        if kind in ENDS and step:
            row_kind, result = ENDS[kind]
            if not self.end(row_kind, step, result, event.detail, at):
                self.note(event)  # its start is not in the history (recovered, exhausted)
            if kind == "step_retry":
                self.begin(Kind.ACTION, step, (event.attempt or 0) + 1, at)
            return
        if kind == "saga_cancelled" and step:
            self.end(Kind.ACTION, step, "cancelled", None, at)
        if kind not in ("step_started", "compensation_attempt"):
            self.note(event)
        if kind in ("saga_started", "step_started") and step:
            self.begin(Kind.ACTION, step, event.attempt or 1, at)
        elif kind == "compensation_attempt" and step:
            self.begin(Kind.COMPENSATION, step, event.attempt or 1, at)


def timeline(events: Iterable[SagaEvent], *, active: bool) -> list[Row]:
    """The rows of a history (oldest first); ``active``: the saga still runs.

    Attempts still open are ``running`` while the saga is active, and ``interrupted`` once
    it has ended without them (a crash, then a cancellation or compensation).
    """
    builder = _Builder()
    for event in events:
        builder.add(event)
    for index in builder.open.values():
        row = builder.rows[index]
        builder.rows[index] = replace(row, result="running" if active else "interrupted")
    return builder.rows
