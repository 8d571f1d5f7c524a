"""The history property every saga must keep, whatever crashed, stalled or raced.

Per saga:

- each once-only transition appears at most once: the saga's start, its outcome, the turn
  to compensation, a cancel; a step's success, refusal or give-up, each attempt's start
  and each compensation's success (attempts of compensations and a ``failed`` outcome may
  repeat only after an operator's retry reopened the saga);
- each step's status, read off its events in order, only moves forward along the state
  machine, and so does the saga's (``failed`` → ``compensating`` only by an operator);
- the stored rows agree with the last event of each: no write moved a row back.

A violation is returned as a sentence naming the saga and what went wrong, so that a test
can assert on the whole list and show every breach at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

#: Where each event puts its step, and how far along the step's state machine that is.
STEP_RANK: Final = {
    "step_started": ("running", 1),
    "step_retry": ("running", 1),
    "step_waiting": ("waiting", 2),
    "step_succeeded": ("succeeded", 3),
    "step_failed": ("failed", 3),
    "step_exhausted": ("compensating", 4),
    "saga_cancelled": ("compensating", 4),
    "compensation_attempt": ("compensating", 4),
    "compensation_retry": ("compensating", 4),
    "compensation_failed": ("compensating", 4),
    "compensation_succeeded": ("compensated", 5),
}
#: Where each saga-level event puts the saga.
SAGA_STATUS: Final = {
    "saga_started": "running",
    "compensation_started": "compensating",
    "operator_retry": "compensating",
    "saga_completed": "completed",
    "saga_compensated": "compensated",
    "operator_resolved": "compensated",
    "saga_failed": "failed",
}
#: The moves the saga's status may make.
SAGA_MOVES: Final = {
    ("running", "compensating"),
    ("running", "completed"),
    ("running", "compensated"),
    ("compensating", "compensated"),
    ("compensating", "failed"),
    ("failed", "compensating"),
    ("failed", "compensated"),
}
#: Events that happen once in a saga's life, keyed by (type, step, attempt as relevant).
ONCE: Final = {"saga_started", "saga_completed", "saga_compensated", "compensation_started"}
ONCE_PER_STEP: Final = {"step_succeeded", "step_failed", "step_exhausted", "saga_cancelled"}
ONCE_PER_ATTEMPT: Final = {"step_started", "step_retry"}
#: Once per attempt until an operator reopens the saga (which restarts their count).
ONCE_PER_REOPENING: Final = {
    "compensation_attempt",
    "compensation_retry",
    "compensation_failed",
    "compensation_succeeded",
    "saga_failed",
}


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a saga's history, as the store returns it."""

    type: str
    step: str | None = None
    attempt: int | None = None


def violations(
    saga_id: str,
    events: Sequence[Event],
    *,
    status: str | None = None,
    steps: dict[str, str] | None = None,
) -> list[str]:
    """Every breach of the history property by one saga (empty when it holds).

    ``status`` and ``steps`` (step name → status), when given, are the stored rows, checked
    against the last event of each.
    """
    found = _repeats(saga_id, events)
    saga_now, step_now = _walk(saga_id, events, found)
    if status is not None and saga_now is not None and status != saga_now:
        found.append(f"saga {saga_id}: row says {status}, its history says {saga_now}")
    for name, stored in (steps or {}).items():
        expected = step_now.get(name)
        if expected is not None and stored != expected and not _settled(stored, expected):
            found.append(f"saga {saga_id}: step {name} row says {stored}, history says {expected}")
    return found


def _settled(stored: str, expected: str) -> bool:
    """A ``succeeded`` step that the saga compensated without an attempt of its own yet
    (a cancel, a sibling's failure) keeps its row; a resolved saga's step may stay put."""
    return STEP_RANK_BY_STATUS.get(stored, 0) >= STEP_RANK_BY_STATUS.get(expected, 0)


STEP_RANK_BY_STATUS: Final = {status: rank for status, rank in STEP_RANK.values()}


def _repeats(saga_id: str, events: Iterable[Event]) -> list[str]:
    seen: set[tuple[object, ...]] = set()
    reopenings = 0
    found = []
    for event in events:
        if event.type == "operator_retry":
            reopenings += 1
        key = _once_key(event, reopenings)
        if key is None:
            continue
        if key in seen:
            found.append(f"saga {saga_id}: {event.type} {event.step or ''} written twice")
        seen.add(key)
    return found


def _once_key(event: Event, reopenings: int) -> tuple[object, ...] | None:
    if event.type in ONCE:
        return (event.type,)
    if event.type in ONCE_PER_STEP:
        return (event.type, event.step)
    if event.type in ONCE_PER_ATTEMPT:
        return (event.type, event.step, event.attempt)
    if event.type in ONCE_PER_REOPENING:
        return (event.type, event.step, event.attempt, reopenings)
    return None


def _walk(
    saga_id: str, events: Iterable[Event], found: list[str]
) -> tuple[str | None, dict[str, str]]:
    saga_now: str | None = None
    step_now: dict[str, tuple[str, int]] = {}
    for event in events:
        if event.type in SAGA_STATUS:
            new = SAGA_STATUS[event.type]
            if saga_now is not None and new != saga_now and (saga_now, new) not in SAGA_MOVES:
                found.append(f"saga {saga_id}: moved from {saga_now} back to {new}")
            saga_now = new
        if event.type in STEP_RANK and event.step is not None:
            status, rank = STEP_RANK[event.type]
            before = step_now.get(event.step)
            if before is not None and rank < before[1]:
                found.append(
                    f"saga {saga_id}: step {event.step} moved from {before[0]} back to {status}"
                )
            if before is None or rank >= before[1]:
                step_now[event.step] = (status, rank)
    return saga_now, {name: status for name, (status, _) in step_now.items()}
