"""The dashboard's timeline: a saga's events paired into attempts, compensations and notes."""

from __future__ import annotations

from sagakit.api.dashboard.timeline import Kind, Row, timeline
from sagakit.records import SagaEvent


def event(
    at: float,
    type: str,
    step: str | None = None,
    attempt: int | None = None,
    detail: str | None = None,
) -> SagaEvent:
    """An event at second ``at``."""
    return SagaEvent(type=type, step=step, attempt=attempt, detail=detail, at=at)


def summary(rows: list[Row]) -> list[tuple[str, str, float, float | None, str | None]]:
    """Each row's kind, title, start, duration and result."""
    return [(r.kind.value, r.title, r.at, r.duration, r.result) for r in rows]


def test_refused_step_and_compensation_become_paired_rows_between_notes() -> None:
    """A refusal after one success reads: started, two attempts, undo of the first, the end."""
    rows = timeline(
        [
            event(0, "saga_started", "payment", 1),
            event(1, "step_succeeded", "payment", 1),
            event(1, "step_started", "inventory", 1),
            event(3, "step_failed", "inventory", 1, "Not enough stock"),
            event(3, "compensation_started", "inventory"),
            event(3, "compensation_attempt", "payment", 1),
            event(4.5, "compensation_succeeded", "payment", 1),
            event(5, "saga_compensated", detail="Not enough stock"),
        ],
        active=False,
    )

    assert summary(rows) == [
        ("note", "Saga started", 0, None, None),
        ("action", "payment", 0, 1, "succeeded"),
        ("action", "inventory", 1, 2, "failed"),
        ("note", "Compensation started", 3, None, None),
        ("compensation", "undo payment", 3, 1.5, "compensated"),
        ("note", "Saga compensated", 5, None, None),
    ]
    assert rows[2].detail == "Not enough stock"
    assert rows[2].attempt == 1


def test_a_retry_ends_one_attempt_with_its_error_and_starts_the_next() -> None:
    """``step_retry`` closes attempt 1 as an error and opens attempt 2 at the same moment."""
    rows = timeline(
        [
            event(0, "saga_started", "charge", 1),
            event(2, "step_retry", "charge", 1, "TimeoutError; attempt 2 in 0.100s"),
            event(2.5, "step_succeeded", "charge", 2),
            event(2.5, "saga_completed"),
        ],
        active=False,
    )

    attempts = [r for r in rows if r.kind is Kind.ACTION]
    assert [(r.attempt, r.at, r.duration, r.result) for r in attempts] == [
        (1, 0, 2, "error"),
        (2, 2, 0.5, "succeeded"),
    ]
    assert attempts[0].detail == "TimeoutError; attempt 2 in 0.100s"


def test_an_attempt_restarted_after_a_crash_is_shown_interrupted() -> None:
    """An attempt whose step starts again (after a crash and a takeover) ended ``interrupted``."""
    rows = timeline(
        [
            event(0, "saga_started", "ship", 1),
            event(20, "saga_claimed", detail="claimed by host:2"),
            event(20, "step_started", "ship", 2),
        ],
        active=True,
    )

    assert summary(rows) == [
        ("note", "Saga started", 0, None, None),
        ("action", "ship", 0, 20, "interrupted"),
        ("note", "Taken over by another process", 20, None, None),
        ("action", "ship", 20, None, "running"),
    ]


def test_open_attempts_of_an_ended_saga_are_interrupted_and_strays_are_notes() -> None:
    """An ended saga's unfinished attempts read ``interrupted``; an end without a start, a note."""
    rows = timeline(
        [
            event(0, "saga_started", "ship", 1),
            event(1, "compensation_failed", "pack", 3, "disk full"),
        ],
        active=False,
    )

    assert [(r.kind, r.title, r.result) for r in rows] == [
        (Kind.NOTE, "Saga started", None),
        (Kind.ACTION, "ship", "interrupted"),
        (Kind.NOTE, "Compensation failed", None),
    ]
    assert rows[2].detail == "disk full"


def test_a_cancellation_ends_the_attempt_it_stopped() -> None:
    """A cancellation noticed before a step ran ends that step's attempt as ``cancelled``."""
    rows = timeline(
        [
            event(0, "saga_started", "a", 1),
            event(0.5, "operator_cancel", detail="cancel requested by alice"),
            event(1, "step_succeeded", "a", 1),
            event(1, "step_started", "b", 1),
            event(1, "saga_cancelled", "b", detail="cancelled by an operator"),
        ],
        active=True,
    )

    assert [(r.title, r.result) for r in rows if r.kind is Kind.ACTION] == [
        ("a", "succeeded"),
        ("b", "cancelled"),
    ]
    assert [r.title for r in rows if r.kind is Kind.NOTE] == [
        "Saga started",
        "Operator: cancel",
        "Cancelled before this step ran",
    ]
