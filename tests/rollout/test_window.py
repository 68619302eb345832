"""Maintenance windows (deltaport.desired.window): parsing, open or not, DST, midnight."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from deltaport.desired.window import WINDOW_FIELD, closed_reason, parse_window
from deltaport.errors import FormatError

BERLIN = "Mon-Fri 02:00-04:00 Europe/Berlin"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_parse_and_print() -> None:
    window = parse_window("mon-fri 2:00-04:00 Europe/Berlin")
    assert str(window) == "Mon-Fri 02:00-04:00 Europe/Berlin"
    assert parse_window(str(window)) == window
    assert str(parse_window("daily 01:00-05:00 UTC")) == "daily 01:00-05:00 UTC"
    assert parse_window("Fri-Mon 22:00-02:00 UTC").days == frozenset({4, 5, 6, 0})
    for bad in ("Mon-Fri 02:00 Europe/Berlin", "Moo 02:00-04:00 UTC", "Mon 25:00-26:00 UTC",
                "Mon 02:00-02:00 UTC", "Mon 02:00-04:00 Mars/Olympus", ""):
        with pytest.raises(FormatError):
            parse_window(bad)


def test_open_in_the_zone_with_daylight_saving() -> None:
    window = parse_window(BERLIN)
    # Thursday 2026-12-03: CET = UTC+1, so 02:00-04:00 is 01:00-03:00 UTC
    assert not window.is_open(utc(2026, 12, 3, 0, 59))
    assert window.is_open(utc(2026, 12, 3, 1, 0)) and window.is_open(utc(2026, 12, 3, 2, 59))
    assert not window.is_open(utc(2026, 12, 3, 3, 0))
    # Thursday 2026-07-02: CEST = UTC+2, so 00:00-02:00 UTC
    assert window.is_open(utc(2026, 7, 2, 0, 30)) and not window.is_open(utc(2026, 7, 2, 2, 30))
    # Saturday: closed all day; it opens again Monday 02:00 Berlin
    assert not window.is_open(utc(2026, 12, 5, 1, 30))
    assert window.next_open(utc(2026, 12, 5, 1, 30)) == utc(2026, 12, 7, 1, 0)


def test_a_window_past_midnight_belongs_to_the_day_it_opens() -> None:
    window = parse_window("Sat 22:00-02:00 UTC")
    assert window.is_open(utc(2026, 12, 5, 23, 0))  # Saturday night
    assert window.is_open(utc(2026, 12, 6, 1, 59))  # into Sunday
    assert not window.is_open(utc(2026, 12, 6, 22, 30))  # Sunday night is not a window


def test_closed_reason_of_a_desired_document() -> None:
    doc = {"services": {}, WINDOW_FIELD: BERLIN}
    assert closed_reason({"services": {}}, utc(2026, 12, 5)) is None
    assert closed_reason(doc, utc(2026, 12, 3, 1, 30)) is None
    reason = closed_reason(doc, utc(2026, 12, 5, 12))
    assert reason is not None and "opens 2026-12-07 02:00 CET" in reason


def test_days_print_as_runs() -> None:
    assert str(parse_window("Sat,Sun,Mon 01:00-02:00 UTC")).startswith("Mon,Sat,Sun ")
    assert str(parse_window("Tue-Thu,Sat 01:00-02:00 UTC")).startswith("Tue-Thu,Sat ")
