"""The sign-in throttle: 5 failed sign-ins from one address in a minute, then 429 for it.

Kept in each process's memory: with ``serve --workers N`` an address gets 5 failures a
minute per process. The table holds at most ``MAX_ADDRESSES`` addresses; past that the
address that failed longest ago is forgotten first.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final

FAILURES: Final = 5
WINDOW: Final = 60.0
MAX_ADDRESSES: Final = 10_000


class SignInThrottle:
    """Counts failed sign-ins per client address over a sliding minute."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        #: Seconds on a monotonic clock; tests replace it to move time on.
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures.get(address)
        if failures is None:
            return deque()
        horizon = self.clock() - WINDOW
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[address]
        return failures

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or ``None`` when it may now."""
        failures = self._recent(address)
        if len(failures) < FAILURES:
            return None
        return max(1, math.ceil(failures[-FAILURES] + WINDOW - self.clock()))

    def failed(self, address: str) -> None:
        """Count one failed sign-in from ``address``."""
        failures = self._recent(address)
        failures.append(self.clock())
        self._failures[address] = failures
        self._failures.move_to_end(address)
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)
