"""The history property checker (``tests/history.py``) catches what it must, and only that."""

from __future__ import annotations

from tests.history import Event, violations

COMPLETED = [
    Event("saga_started", "payment", 1),
    Event("step_succeeded", "payment", 1),
    Event("step_started", "inventory", 1),
    Event("step_retry", "inventory", 1),
    Event("step_started", "inventory", 2),
    Event("step_succeeded", "inventory", 2),
    Event("saga_completed"),
]


def test_a_clean_history_with_retries_and_claims_has_no_violation() -> None:
    """Retries, claims and a completed saga whose rows agree pass."""
    events = [*COMPLETED[:2], Event("saga_claimed"), *COMPLETED[2:]]

    found = violations("s", events, status="completed", steps={"payment": "succeeded"})

    assert found == []


def test_a_success_written_twice_is_reported() -> None:
    """A stale driver's second ``step_succeeded`` is a violation."""
    events = [*COMPLETED[:2], Event("step_succeeded", "payment", 1), *COMPLETED[2:]]

    assert violations("s", events) == ["saga s: step_succeeded payment written twice"]


def test_a_step_moved_back_is_reported() -> None:
    """A step that succeeded and is then recorded running again moved backward."""
    events = [*COMPLETED[:2], Event("step_retry", "payment", 1)]

    assert violations("s", events) == ["saga s: step payment moved from succeeded back to running"]


def test_a_saga_moved_back_to_running_is_reported() -> None:
    """Compensating, then ``saga_completed``, is not a move of the state machine."""
    events = [COMPLETED[0], Event("compensation_started", "payment"), Event("saga_completed")]

    assert violations("s", events) == ["saga s: moved from compensating back to completed"]


def test_a_row_behind_its_history_is_reported() -> None:
    """A stored step row older than its last event was overwritten by an older state."""
    found = violations("s", COMPLETED, status="completed", steps={"inventory": "running"})

    assert found == ["saga s: step inventory row says running, history says succeeded"]


def test_compensation_attempts_may_repeat_after_an_operator_retry() -> None:
    """An operator's retry restarts the count of compensation attempts."""
    attempt = Event("compensation_attempt", "payment", 1)
    events = [
        COMPLETED[0],
        Event("compensation_started", "payment"),
        attempt,
        Event("saga_failed", "payment"),
        Event("operator_retry"),
        attempt,
        Event("compensation_succeeded", "payment", 1),
        Event("saga_compensated"),
    ]

    assert violations("s", events, status="compensated") == []
