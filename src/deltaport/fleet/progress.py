"""Bytes of a bundle a device has received mid-download (``POST /api/v1/device/progress``).

The agent reports ``received`` of ``size`` while it downloads (rate limited on its
side, docs/hub-api.md); the hub keeps the latest report per device image, with its
own time and a smoothed rate between consecutive reports. A report describes one
in-transit episode: :func:`shown` tells whether a stored row still applies to a device
image (still ``in_transit``, same bundle, not older than the image's last status
change), so a redeployment or a retry never shows an earlier episode's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from deltaport.errors import FormatError, StateError
from deltaport.fleet.documents import check_image_id, load_json
from deltaport.fleet.models import Bundle, DeviceImage, DownloadProgress, utcnow
from deltaport.fleet.states import ImageStatus

PROGRESS_MAX_BYTES = 4096  # a progress body is ~150 bytes
RATE_WEIGHT = 0.5  # weight of the newest interval in the smoothed rate


@dataclass(frozen=True)
class ProgressReport:
    """One device's word on one bundle: bytes received so far, of the bundle's size."""

    bundle: str  # the bundle file's digest
    received: int
    size: int
    resumed: bool = False  # the first report of a new agent process: no rate from before


def _count(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FormatError(f"progress.{key} must be a non-negative integer")
    return value


def parse_progress(body: bytes) -> ProgressReport:
    """The report of a body ``{"bundle", "received", "size", "resumed"?}``.

    Raises:
        FormatError: not such an object, too large, or ``received`` > ``size``.
    """
    if len(body) > PROGRESS_MAX_BYTES:
        raise FormatError(f"progress report is larger than {PROGRESS_MAX_BYTES} bytes")
    doc = load_json(body, "progress report")
    if not isinstance(doc, dict):
        raise FormatError("progress report must be a JSON object")
    digest = check_image_id(doc.get("bundle"), "progress.bundle")
    received, size = _count(doc, "received"), _count(doc, "size")
    if size == 0 or received > size:
        raise FormatError(f"progress: received {received} must lie within 0..size ({size})")
    resumed = doc.get("resumed", False)
    if not isinstance(resumed, bool):
        raise FormatError("progress.resumed must be true or false")
    return ProgressReport(digest, received, size, resumed)


def next_rate(previous: DownloadProgress | None, received: int, now: datetime,
              resumed: bool) -> float | None:
    """The smoothed rate (bytes/s) after a report of RECEIVED at NOW (pure).

    None when there is no earlier report of the episode, the download resumed in a
    new agent process (the gap is not link time), or it went backwards (re-fetching).
    """
    if previous is None or resumed or received < previous.bytes_received:
        return None
    seconds = (now - previous.reported_at).total_seconds()
    if seconds <= 0 or received == previous.bytes_received:
        return previous.rate_bps
    rate = (received - previous.bytes_received) / seconds
    if previous.rate_bps is None:
        return rate
    return RATE_WEIGHT * rate + (1 - RATE_WEIGHT) * previous.rate_bps


def shown(row: DownloadProgress | None, *, status: str, bundle_id: int | None,
          since: datetime | None) -> bool:
    """Whether ROW applies to a device image in STATUS, with BUNDLE_ID, changed at SINCE."""
    return (row is not None and status == ImageStatus.IN_TRANSIT.value
            and row.bundle_id == bundle_id and (since is None or row.reported_at >= since))


def record_progress(session: Session, *, device_id: int, report: ProgressReport,
                    now: datetime | None = None) -> int:
    """Store REPORT for the device's in-transit images carried by that bundle; how many.

    Raises:
        FormatError: ``size`` is not the bundle's size.
        StateError: no image of this device is in transit with that bundle (409).
    """
    now = now or utcnow()
    rows = session.execute(
        select(DeviceImage, Bundle)
        .join(Bundle, Bundle.id == DeviceImage.bundle_id)
        .where(DeviceImage.device_id == device_id, Bundle.digest == report.bundle,
               DeviceImage.status == ImageStatus.IN_TRANSIT.value)
    ).all()
    if not rows:
        raise StateError(f"no image is in transit with bundle {report.bundle} on this device")
    for di, bundle in rows:
        if bundle.size != report.size:
            raise FormatError(f"progress: size {report.size} is not the bundle's "
                              f"{bundle.size} bytes")
        stored = previous = session.get(DownloadProgress, di.id)
        if previous is not None and not shown(previous, status=di.status,
                                              bundle_id=di.bundle_id, since=di.updated_at):
            previous = None  # an earlier episode's report
        values = {"bundle_id": bundle.id, "bytes_received": report.received,
                  "reported_at": now,
                  "rate_bps": next_rate(previous, report.received, now, report.resumed)}
        _upsert(session, di.id, values)
        if stored is not None:
            session.expire(stored)  # the row changed under the ORM
    return len(rows)


def _upsert(session: Session, device_image_id: int, values: dict[str, Any]) -> None:
    """Insert or replace the row (a concurrent report of the same image: the last wins)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(DownloadProgress).values(device_image_id=device_image_id, **values)
    session.execute(stmt.on_conflict_do_update(index_elements=["device_image_id"],
                                               set_=values))


@dataclass(frozen=True)
class Reported:
    """What the dashboard shows of a device's reports: bytes, when, the hub's rate."""

    received: int
    at: datetime
    rate_bps: float | None  # bytes/s

    def eta_seconds(self, size: int | None, now: datetime) -> float | None:
        """Seconds left at the reported rate, counted from the last report (None: no rate)."""
        if size is None or not self.rate_bps:
            return None
        left = (size - self.received) / self.rate_bps
        return max(0.0, left - (now - self.at).total_seconds())


def reported(row: Any) -> Reported | None:
    """The report a dashboard row carries (``progress_*`` columns), if it applies to it."""
    if row.progress_received is None or row.status != ImageStatus.IN_TRANSIT.value:
        return None
    if row.progress_bundle != row.bundle_id or row.progress_at < row.updated_at:
        return None  # an earlier episode's
    return Reported(int(row.progress_received), row.progress_at, row.progress_rate)
