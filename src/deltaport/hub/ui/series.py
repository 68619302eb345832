"""Time series for the dashboard's charts: transfers per hour or day, bytes sent vs a pull.

Buckets are made by the database (``date_trunc`` on PostgreSQL, ``strftime`` on
SQLite) so only one row per bucket comes back. Transfers are the device-image events
that ended one (``present``: arrived; ``failed``); bytes are the bundles sent in the
bucket (when they were built and linked to their devices) next to what layer pulls of
the same images would have sent (:func:`queries.bundle_pull_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from deltaport.fleet.models import Bundle, BundleDevice, DeploymentSet, Device, Event
from deltaport.fleet.states import ImageStatus
from deltaport.hub.ui.queries import bundle_pull_bytes, image_layers


class Every(StrEnum):
    """The width of a chart's bucket."""

    HOUR = "hour"
    DAY = "day"


SECONDS = {Every.HOUR: 3600, Every.DAY: 86400}
PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
SQLITE_FORMAT = {Every.HOUR: "%Y-%m-%d %H:00:00", Every.DAY: "%Y-%m-%d 00:00:00"}


@dataclass(frozen=True)
class SeriesFilter:
    """Which transfers count: since when, bucket width, ordered by whom, on which label."""

    since: datetime
    every: Every = Every.HOUR
    by: str | None = None
    label: tuple[str, str] | None = None


@dataclass(frozen=True)
class Series:
    """Aligned columns: bucket starts (Unix seconds) and one list of values per name."""

    starts: list[int]
    values: dict[str, list[int]]

    def chart(self) -> dict[str, Any]:
        """The shape static/charts.js draws: x, the series' labels and their y lists."""
        return {"x": self.starts, "labels": list(self.values), "y": list(self.values.values())}


def _bucket(session: Session, column: Any, every: Every) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc(every.value, column)
    return func.strftime(SQLITE_FORMAT[every], column)


def _epoch(value: Any) -> int:
    if isinstance(value, str):
        value = datetime.fromisoformat(value).replace(tzinfo=UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def _axis(f: SeriesFilter, now: datetime) -> list[int]:
    step = SECONDS[f.every]
    first = int(f.since.timestamp()) // step * step
    return list(range(first, int(now.timestamp()) + 1, step))


def transfers(session: Session, f: SeriesFilter, now: datetime) -> Series:
    """Transfers that ended per bucket: arrived (present) and failed."""
    bucket = _bucket(session, Event.at, f.every).label("bucket")
    ended = [ImageStatus.PRESENT.value, ImageStatus.FAILED.value]
    query = (select(bucket, Event.to_status, func.count())
             .where(Event.kind == "device_image", Event.at >= f.since,
                    Event.to_status.in_(ended),
                    Event.from_status == ImageStatus.IN_TRANSIT.value)
             .group_by(bucket, Event.to_status))
    if f.by:
        query = query.join(DeploymentSet, DeploymentSet.id == Event.deployment_set_id).where(
            DeploymentSet.requested_by == f.by)
    if f.label:
        query = query.join(Device, Device.id == Event.device_id).where(
            Device.labels[f.label[0]].as_string() == f.label[1])
    counts: dict[tuple[int, str], int] = {}
    for start, status, n in session.execute(query):
        counts[(_epoch(start), status)] = int(n)
    axis = _axis(f, now)
    return Series(axis, {name: [counts.get((t, status), 0) for t in axis]
                         for name, status in (("arrived", ImageStatus.PRESENT.value),
                                              ("failed", ImageStatus.FAILED.value))})


def bytes_sent(session: Session, f: SeriesFilter, now: datetime) -> Series:
    """Bundle bytes sent per bucket, next to what layer pulls would have sent."""
    query = (select(BundleDevice.bundle_id, func.count())
             .join(Bundle, Bundle.id == BundleDevice.bundle_id)
             .where(Bundle.created_at >= f.since)
             .group_by(BundleDevice.bundle_id))
    if f.by:
        query = query.join(DeploymentSet, DeploymentSet.id == BundleDevice.deployment_set_id
                           ).where(DeploymentSet.requested_by == f.by)
    if f.label:
        query = query.join(Device, Device.id == BundleDevice.device_id).where(
            Device.labels[f.label[0]].as_string() == f.label[1])
    per_bundle = {int(b): int(n) for b, n in session.execute(query)}
    bundles = session.scalars(select(Bundle).where(Bundle.id.in_(per_bundle))).all()
    layers = image_layers(session, {t for b in bundles for t in b.targets})
    axis = _axis(f, now)
    step = SECONDS[f.every]
    sent, pulled = dict.fromkeys(axis, 0), dict.fromkeys(axis, 0)
    for b in bundles:
        start = int(b.created_at.timestamp()) // step * step
        if start in sent:
            sent[start] += b.size * per_bundle[b.id]
            pulled[start] += bundle_pull_bytes(b, layers) * per_bundle[b.id]
    return Series(axis, {"bundles sent": [sent[t] for t in axis],
                         "layer pull": [pulled[t] for t in axis]})
