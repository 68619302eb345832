"""When to retry and when to give up: exponential backoff with full jitter. Pure.

After attempt ``n`` that made no progress the delay is uniform in
``[0, min(backoff_max, backoff_initial * 2**n))`` ("full jitter", so a fleet of
devices coming back after an outage does not hammer the hub in step). An attempt
that brought new bytes resets the count: a link that drops every few seconds but
moves data is slow, not dead.
"""

from __future__ import annotations

from deltaport.transfer.config import DownloadConfig

_MAX_EXPONENT = 62  # 2**62 seconds is past any ceiling; avoids float overflow


def backoff_ceiling(failures: int, initial: float, maximum: float) -> float:
    """Upper bound of the delay after ``failures`` consecutive failed attempts (0-based)."""
    return min(maximum, initial * 2.0 ** min(max(failures, 0), _MAX_EXPONENT))


def backoff_delay(failures: int, config: DownloadConfig, rand: float) -> float:
    """Delay before the next attempt; ``rand`` in ``[0, 1)`` supplies the jitter."""
    ceiling = backoff_ceiling(failures, config.backoff_initial, config.backoff_max)
    return ceiling * rand if config.jitter else ceiling


def give_up_reason(failures: int, elapsed: float, config: DownloadConfig) -> str | None:
    """Why to stop retrying, or None to go on.

    ``failures`` counts consecutive attempts without progress, ``elapsed`` the
    seconds since the download started.
    """
    if config.max_attempts is not None and failures >= config.max_attempts:
        return f"{failures} attempts in a row brought no data"
    if config.max_duration is not None and elapsed >= config.max_duration:
        return f"gave up after {elapsed:.1f}s (max_duration {config.max_duration:g}s)"
    return None
