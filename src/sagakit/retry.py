"""Retry policies: how often and how long to wait between attempts."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff, spread by ``jitter`` (a fraction of each delay, either way).

    ``max_attempts`` counts every attempt, the first included: 1 means "never retry".
    """

    max_attempts: int = 3
    initial_delay: float = 0.1
    max_delay: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def can_retry(self, attempts_made: int) -> bool:
        """Whether another attempt is allowed after ``attempts_made`` attempts."""
        return attempts_made < self.max_attempts

    def delay(self, attempts_made: int) -> float:
        """Seconds to wait before the attempt that follows ``attempts_made`` attempts."""
        base = min(
            self.max_delay, self.initial_delay * self.multiplier ** max(0, attempts_made - 1)
        )
        spread = base * self.jitter
        return max(0.0, base - spread + random.random() * 2 * spread)  # not crypto


#: The default for actions: three attempts in about a second.
DEFAULT_RETRY = RetryPolicy()

#: The default for compensations: they must succeed, so keep trying for about half an hour.
DEFAULT_COMPENSATION_RETRY = RetryPolicy(max_attempts=200, initial_delay=0.1, max_delay=10.0)
