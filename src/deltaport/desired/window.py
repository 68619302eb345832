"""Maintenance windows: when a device may activate a new desired manifest (pure).

A window is ``DAYS HH:MM-HH:MM ZONE``: ``Mon-Fri 02:00-04:00 Europe/Berlin``,
``Sat,Sun 22:00-02:00 UTC`` (past midnight: it belongs to the day it opens),
``daily 01:00-05:00 America/Chicago``. Times are wall-clock times in the IANA zone
(``zoneinfo``), so a window follows daylight saving time. An operator sets it on a
device as the label ``maintenance-window``; the hub carries it in the signed desired
manifest (the device-local document's :data:`WINDOW_FIELD`), so an agent honours it
while offline. Delivery goes on at any time; only activation waits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from deltaport.errors import FormatError

WINDOW_LABEL = "maintenance-window"  # the device label that sets it (hub side)
WINDOW_FIELD = "x-deltaport-maintenance-window"  # where the desired manifest carries it
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FORM = re.compile(r"^\s*(\S+)\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s+(\S+)\s*$")


@dataclass(frozen=True)
class MaintenanceWindow:
    """Days of the week (0 = Monday) it opens on, its wall-clock span, its zone."""

    days: frozenset[int]
    start: time
    end: time
    zone: str

    def __str__(self) -> str:
        return f"{_days_text(self.days)} {self.start:%H:%M}-{self.end:%H:%M} {self.zone}"

    def _opening(self, day: date) -> tuple[datetime, datetime]:
        tz = ZoneInfo(self.zone)
        opens = datetime.combine(day, self.start, tzinfo=tz)
        closes_on = day + timedelta(days=1) if self.end <= self.start else day
        return opens, datetime.combine(closes_on, self.end, tzinfo=tz)

    def is_open(self, instant: datetime) -> bool:
        """Whether the window is open at INSTANT (an aware datetime)."""
        local = instant.astimezone(ZoneInfo(self.zone))
        for back in (0, 1):  # opened today, or yesterday and still open past midnight
            day = local.date() - timedelta(days=back)
            if day.weekday() in self.days:
                opens, closes = self._opening(day)
                if opens <= instant < closes:
                    return True
        return False

    def next_open(self, instant: datetime) -> datetime:
        """INSTANT if open, else when the window opens next."""
        if self.is_open(instant):
            return instant
        local = instant.astimezone(ZoneInfo(self.zone))
        for ahead in range(8):
            day = local.date() + timedelta(days=ahead)
            if day.weekday() in self.days:
                opens, _ = self._opening(day)
                if opens > instant:
                    return opens
        raise AssertionError("a window with days opens within a week")  # pragma: no cover


def _days_text(days: frozenset[int]) -> str:
    if days == frozenset(range(7)):
        return "daily"
    runs: list[list[int]] = []
    for d in sorted(days):
        if runs and runs[-1][-1] == d - 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    names = [DAYS[d].capitalize() for d in range(7)]
    return ",".join(f"{names[r[0]]}-{names[r[-1]]}" if len(r) > 2 else
                    ",".join(names[d] for d in r) for r in runs)


def _parse_days(text: str) -> frozenset[int]:
    lowered = text.lower()
    if lowered in ("daily", "*"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in lowered.split(","):
        first, sep, last = part.partition("-")
        if first not in DAYS or (sep and last not in DAYS):
            raise ValueError(part)
        a, b = DAYS.index(first), DAYS.index(last if sep else first)
        span = range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)]
        days.update(span)
    return frozenset(days)


def parse_window(text: str) -> MaintenanceWindow:
    """``Mon-Fri 02:00-04:00 Europe/Berlin`` → a MaintenanceWindow.

    Raises:
        FormatError: not that form, an unknown day or zone, a bad time, an empty span.
    """
    form = "expected DAYS HH:MM-HH:MM ZONE, e.g. 'Mon-Fri 02:00-04:00 Europe/Berlin'"
    found = _FORM.match(text or "")
    if found is None:
        raise FormatError(f"maintenance window {text!r}: {form}")
    days_text, h1, m1, h2, m2, zone = found.groups()
    try:
        days = _parse_days(days_text)
        start, end = time(int(h1), int(m1)), time(int(h2), int(m2))
    except ValueError:
        raise FormatError(f"maintenance window {text!r}: {form}") from None
    if start == end:
        raise FormatError(f"maintenance window {text!r}: it opens and closes at {start:%H:%M}")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise FormatError(f"maintenance window {text!r}: unknown time zone {zone!r}") from None
    return MaintenanceWindow(days, start, end, zone)


def window_of(manifest: dict[str, Any]) -> MaintenanceWindow | None:
    """The window a device-local desired document carries, if any. Raises FormatError."""
    value = manifest.get(WINDOW_FIELD)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FormatError(f"desired manifest {WINDOW_FIELD} must be a string")
    return parse_window(value)


def utc_now() -> datetime:
    """The wall clock (the agent's; tests replace it)."""
    return datetime.now(UTC)


def closed_reason(manifest: dict[str, Any], now: datetime | None = None) -> str | None:
    """Why a device must not activate MANIFEST at NOW (default the wall clock; None: it may)."""
    now = now or utc_now()
    window = window_of(manifest)
    if window is None or window.is_open(now):
        return None
    opens = window.next_open(now).astimezone(ZoneInfo(window.zone))
    return f"waits for its maintenance window {window} (opens {opens:%Y-%m-%d %H:%M %Z})"
