"""A token bucket that keeps average read throughput under a byte rate.

The downloader reads a piece, then pays for it here; when the bucket is in debt
the caller sleeps until it is even again. Reading slower makes TCP flow control
slow the sender, so the cap holds on the link, not just in our process. The
clock and sleep are injected so the arithmetic is tested without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` bytes/s on average, bursts of at most ``capacity`` bytes."""

    def __init__(
        self,
        rate: float,
        capacity: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be > 0")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._tokens = capacity
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def consume(self, amount: int) -> float:
        """Pay for ``amount`` bytes; sleep off any debt. Returns the seconds slept."""
        self._refill()
        self._tokens -= amount
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self.rate
        self._sleep(wait)
        self._refill()
        return wait
