"""Settings and results of a download: frozen values passed in, never read from globals.

Limits that guard against a hostile or broken server (``max_file_size``,
``max_chunk_attempts``) live here next to the knobs for slow links (``max_rate``,
the backoff schedule), so one object says how a device talks to its hub.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deltaport.errors import UsageError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

DEFAULT_CHUNK_SIZE = 256 * KiB  # ~2 s at 1 Mbit/s: the most a drop can cost twice
DEFAULT_READ_SIZE = 16 * KiB  # one socket read; the rate limiter's granularity
DEFAULT_MAX_FILE_SIZE = 64 * GiB  # a download of unknown size stops here


@dataclass(frozen=True)
class DownloadConfig:
    """How to download: timeouts, retry schedule, bandwidth cap and limits.

    Retry limits count what a dead link looks like, not how long a slow one takes:
    ``max_attempts`` is the number of consecutive attempts that brought no new
    byte, ``max_duration`` the seconds this whole call may take. ``None`` means
    keep trying forever (an agent on a ship waits out an outage of days).
    """

    chunk_size_hint: int = DEFAULT_CHUNK_SIZE  # chunk size make_plan uses by default
    read_size: int = DEFAULT_READ_SIZE  # bytes per socket read
    max_rate: int | None = None  # bytes/s cap on average throughput (token bucket)
    rate_burst: int | None = None  # bucket capacity; default max(read_size, max_rate // 8)
    connect_timeout: float = 10.0  # seconds
    read_timeout: float = 30.0  # seconds without a byte before the attempt fails
    backoff_initial: float = 0.5  # seconds, first retry delay ceiling
    backoff_max: float = 60.0  # seconds, retry delay ceiling
    jitter: bool = True  # full jitter: delay uniform in [0, ceiling)
    max_attempts: int | None = None  # consecutive attempts without progress
    max_duration: float | None = None  # seconds for the whole call
    max_chunk_attempts: int = 3  # a chunk failing its digest this often is an IntegrityError
    max_file_size: int = DEFAULT_MAX_FILE_SIZE  # bytes, when the size is not known up front
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. Authorization

    def __post_init__(self) -> None:
        _positive("chunk_size_hint", self.chunk_size_hint)
        _positive("read_size", self.read_size)
        _positive("max_chunk_attempts", self.max_chunk_attempts)
        _positive("max_file_size", self.max_file_size)
        for name in ("connect_timeout", "read_timeout", "backoff_max"):
            _positive(name, getattr(self, name))
        for name in ("max_rate", "rate_burst", "max_attempts", "max_duration"):
            value = getattr(self, name)
            if value is not None:
                _positive(name, value)
        if self.backoff_initial < 0:
            raise UsageError(f"backoff_initial must be >= 0, got {self.backoff_initial}")

    @property
    def burst(self) -> int:
        """Token bucket capacity in bytes (only meaningful with ``max_rate``)."""
        if self.rate_burst is not None:
            return self.rate_burst
        return max(self.read_size, (self.max_rate or 0) // 8)


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise UsageError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class DownloadResult:
    """What a finished download cost.

    ``bytes_fetched`` counts every body byte read from the network in this call,
    including bytes discarded (a server ignoring Range, a corrupt chunk), so
    callers and tests can check that nothing was sent twice.
    """

    path: Path
    total_size: int  # bytes of the file (the plan's region)
    bytes_fetched: int  # body bytes read from the network by this call
    bytes_reused: int  # bytes already on disk that verified and were kept
    chunks_refetched: int  # chunks fetched again after failing their digest
    requests: int  # HTTP requests made
    retries: int  # attempts that failed transiently and were retried
    elapsed: float  # seconds
