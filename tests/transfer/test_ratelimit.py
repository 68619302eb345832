"""The token bucket, on a fake clock: average rate capped, bursts bounded."""

from __future__ import annotations

import pytest

from deltaport.transfer.ratelimit import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_average_rate_is_capped_after_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, 500, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        bucket.consume(100)  # 10_000 bytes
    assert clock.now == pytest.approx((10_000 - 500) / 1000)


def test_idle_time_refills_only_up_to_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, 500, clock=clock, sleep=clock.sleep)
    clock.now = 100.0  # a long pause earns no more than one burst
    assert bucket.consume(500) == 0.0
    assert bucket.consume(1000) == pytest.approx(1.0)


def test_a_piece_larger_than_the_bucket_is_paid_in_debt() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100, 10, clock=clock, sleep=clock.sleep)
    assert bucket.consume(1010) == pytest.approx(10.0)
