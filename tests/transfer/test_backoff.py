"""The retry schedule: exponential, capped, full jitter, and when to give up."""

from __future__ import annotations

import pytest

from deltaport.errors import UsageError
from deltaport.transfer import DownloadConfig
from deltaport.transfer.backoff import backoff_ceiling, backoff_delay, give_up_reason


def test_ceiling_doubles_up_to_the_cap() -> None:
    assert [backoff_ceiling(n, 0.5, 60) for n in range(9)] == [
        0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_ceiling(10_000, 0.5, 60) == 60  # no overflow after days of outage


def test_full_jitter_spans_zero_to_ceiling() -> None:
    config = DownloadConfig()
    assert backoff_delay(3, config, 0.0) == 0.0
    assert backoff_delay(3, config, 0.5) == 2.0
    assert backoff_delay(3, config, 0.999) < 4.0
    assert backoff_delay(3, DownloadConfig(jitter=False), 0.1) == 4.0


def test_give_up_only_at_the_configured_limits() -> None:
    forever = DownloadConfig()
    assert give_up_reason(10**6, 10**7, forever) is None
    by_attempts = DownloadConfig(max_attempts=3)
    assert give_up_reason(2, 0, by_attempts) is None
    assert "3 attempts" in (give_up_reason(3, 0, by_attempts) or "")
    by_time = DownloadConfig(max_duration=5)
    assert give_up_reason(0, 4.9, by_time) is None
    assert "max_duration" in (give_up_reason(0, 5.0, by_time) or "")


@pytest.mark.parametrize(
    "bad",
    [{"max_rate": 0}, {"read_timeout": -1}, {"max_attempts": 0}, {"backoff_initial": -0.1},
     {"max_chunk_attempts": 0}],
)
def test_config_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        DownloadConfig(**bad)  # type: ignore[arg-type]


def test_default_burst_is_an_eighth_of_a_second() -> None:
    assert DownloadConfig(max_rate=800_000).burst == 100_000
    assert DownloadConfig(max_rate=1000).burst == DownloadConfig().read_size
