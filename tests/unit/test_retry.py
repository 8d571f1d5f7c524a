"""RetryPolicy: how many attempts, and how long to wait between them."""

from __future__ import annotations

import pytest

from sagakit import retry
from sagakit.retry import DEFAULT_COMPENSATION_RETRY, DEFAULT_RETRY, RetryPolicy


class FixedRandom:
    """Stands in for the ``random`` module: ``random()`` always returns one value."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_delays_without_jitter_grow_by_the_multiplier() -> None:
    """Without jitter each delay is the previous one times the multiplier."""
    policy = RetryPolicy(max_attempts=10, initial_delay=0.1, multiplier=2.0, jitter=0.0)

    delays = [policy.delay(n) for n in range(1, 5)]

    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8])


def test_delay_before_the_first_retry_is_the_initial_delay() -> None:
    """After zero or one attempt the wait is the initial delay."""
    policy = RetryPolicy(initial_delay=0.25, jitter=0.0)

    assert policy.delay(0) == pytest.approx(0.25)
    assert policy.delay(1) == pytest.approx(0.25)


def test_delays_without_jitter_are_capped_at_max_delay() -> None:
    """Exponential growth stops at ``max_delay``, however many attempts were made."""
    policy = RetryPolicy(
        max_attempts=100, initial_delay=0.1, max_delay=1.0, multiplier=2.0, jitter=0.0
    )

    assert policy.delay(4) == pytest.approx(0.8)
    assert policy.delay(5) == pytest.approx(1.0)
    assert policy.delay(60) == pytest.approx(1.0)


def test_jitter_stays_within_its_fraction_of_the_base_delay() -> None:
    """With jitter j every delay lies within base * (1 +- j)."""
    policy = RetryPolicy(initial_delay=1.0, max_delay=10.0, multiplier=2.0, jitter=0.5)

    delays = [policy.delay(3) for _ in range(500)]

    assert all(2.0 <= d <= 6.0 for d in delays)
    assert max(delays) - min(delays) > 1.0  # the delays really are spread out


def test_jitter_bounds_are_reached_at_the_extremes_of_the_random_draw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lowest draw gives base * (1 - j) and the highest approaches base * (1 + j)."""
    policy = RetryPolicy(initial_delay=1.0, jitter=0.25)

    monkeypatch.setattr(retry, "random", FixedRandom(0.0))
    low = policy.delay(1)
    monkeypatch.setattr(retry, "random", FixedRandom(0.999999))
    high = policy.delay(1)

    assert low == pytest.approx(0.75)
    assert high == pytest.approx(1.25, abs=1e-5)


def test_jitter_above_one_never_gives_a_negative_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """A jitter wider than the base delay is clamped at zero rather than going negative."""
    policy = RetryPolicy(initial_delay=1.0, jitter=3.0)
    monkeypatch.setattr(retry, "random", FixedRandom(0.0))

    assert policy.delay(1) == 0.0


def test_can_retry_counts_every_attempt_the_first_included() -> None:
    """``max_attempts=3`` allows a second and a third attempt, and no fourth."""
    policy = RetryPolicy(max_attempts=3)

    assert [policy.can_retry(n) for n in range(5)] == [True, True, True, False, False]


def test_single_attempt_policy_never_retries() -> None:
    """``max_attempts=1`` means the first attempt is the only one."""
    assert not RetryPolicy(max_attempts=1).can_retry(1)


def test_default_compensation_policy_keeps_trying_far_longer_than_actions() -> None:
    """Compensations must succeed, so their default allows many more attempts than actions'."""
    assert DEFAULT_RETRY.can_retry(2)
    assert not DEFAULT_RETRY.can_retry(3)
    assert DEFAULT_COMPENSATION_RETRY.can_retry(100)
    assert DEFAULT_COMPENSATION_RETRY.max_attempts > 10 * DEFAULT_RETRY.max_attempts


@pytest.mark.parametrize("max_attempts", [0, -1])
def test_policy_without_any_attempt_is_refused(max_attempts: int) -> None:
    """A policy must allow at least one attempt."""
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=max_attempts)


@pytest.mark.parametrize(
    ("initial_delay", "max_delay"), [(-0.1, 10.0), (0.1, -1.0)], ids=["initial", "max"]
)
def test_policy_with_a_negative_delay_is_refused(initial_delay: float, max_delay: float) -> None:
    """Neither the initial nor the maximum delay may be negative."""
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(initial_delay=initial_delay, max_delay=max_delay)


def test_zero_delays_are_allowed() -> None:
    """A policy that retries at once is valid and always waits zero seconds."""
    policy = RetryPolicy(initial_delay=0.0, max_delay=0.0)

    assert policy.delay(3) == 0.0
