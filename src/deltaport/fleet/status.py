"""The read-only queries a dashboard needs: JSON-ready dicts, shared by CLI and hub."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from deltaport.errors import UsageError
from deltaport.fleet import queries
from deltaport.fleet.models import (
    DeploymentDevice,
    DeploymentSet,
    Device,
    DeviceImage,
    Event,
    Image,
    utcnow,
)
from deltaport.fleet.states import ImageStatus

BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}
HISTORY_MAX_EVENTS = 1_000_000  # history reads at most this many events
_AGO = re.compile(r"^(\d+)\s*([mhd])$")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def deployment_status(session: Session, set_id: str) -> dict[str, Any]:
    """A deployment set, with each device's status for each of its images."""
    dset = queries.get_deployment_set(session, set_id)
    devices, members = queries.set_members(session, set_id)
    images = [session.get(Image, m.image_id) for m in members]
    statuses = queries.device_statuses(session, [d.id for d in devices])
    arrived = {
        m.device_id: m.arrived_at
        for m in session.scalars(
            select(DeploymentDevice).where(DeploymentDevice.deployment_set_id == set_id)
        )
    }
    rows, counts = [], Counter[str]()
    for d in devices:
        per = {
            img.name: statuses[d.id].get(img.image_id, ImageStatus.ABSENT.value)
            for img in images
            if img is not None
        }
        counts.update(per.values())
        rows.append({"device": d.name, "images": per, "arrived_at": _iso(arrived.get(d.id))})
    return {
        "id": dset.id,
        "state": dset.state,
        "priority": dset.priority,
        "requested_by": dset.requested_by,
        "contact_email": dset.contact_email,
        "created_at": _iso(dset.created_at),
        "finished_at": _iso(dset.finished_at),
        "images": [img.name for img in images if img is not None],
        "counts": dict(counts),
        "devices": rows,
    }


def device_status(session: Session, name: str) -> dict[str, Any]:
    """A device, the images it has or is getting, and its deployment sets."""
    device = queries.get_device(session, name)
    rows = session.scalars(
        select(DeviceImage).where(DeviceImage.device_id == device.id).order_by(DeviceImage.id)
    ).all()
    names = {
        i: img.name
        for i, img in queries.images_by_content(session, {r.image_id for r in rows}).items()
    }
    sets = session.scalars(
        select(DeploymentSet)
        .join(DeploymentDevice, DeploymentDevice.deployment_set_id == DeploymentSet.id)
        .where(DeploymentDevice.device_id == device.id)
        .order_by(DeploymentSet.created_at.desc())
    ).all()
    return {
        "device": device.name,
        "link_rate_bps": device.link_rate_bps,
        "labels": device.labels,
        "local_registry": device.local_registry,
        "last_seen": _iso(device.last_seen),
        "images": [
            {
                "image": names.get(r.image_id, r.image_id),
                "image_id": r.image_id,
                "status": r.status,
                "updated_at": _iso(r.updated_at),
                "failure_reason": r.failure_reason,
                "deployment": r.deployment_set_id,
            }
            for r in rows
        ],
        "deployments": [{"id": s.id, "state": s.state} for s in sets],
    }


def image_status(session: Session, reference: str) -> dict[str, Any]:
    """A registered image and which devices have it in which status."""
    image = queries.find_image(session, reference)
    rows = session.execute(
        select(Device.name, DeviceImage.status)
        .join(Device, Device.id == DeviceImage.device_id)
        .where(DeviceImage.image_id == image.image_id)
        .order_by(Device.name)
    ).all()
    return {
        "image": image.name,
        "image_id": image.image_id,
        "manifest_digest": image.manifest_digest,
        "layers": len(image.diff_ids),
        "size": sum(int(s) for s in image.layer_sizes),
        "build_id": image.build_id,
        "registered_by": image.registered_by,
        "registered_at": _iso(image.registered_at),
        "counts": dict(Counter(status for _, status in rows)),
        "devices": [{"device": n, "status": s} for n, s in rows],
    }


def deployments(
    session: Session, *, by: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Recent deployment sets, newest first, optionally only those ordered by BY."""
    query = select(DeploymentSet).order_by(DeploymentSet.created_at.desc()).limit(limit)
    if by:
        query = query.where(DeploymentSet.requested_by == by)
    return [
        {
            "id": s.id,
            "state": s.state,
            "priority": s.priority,
            "requested_by": s.requested_by,
            "contact_email": s.contact_email,
            "created_at": _iso(s.created_at),
            "finished_at": _iso(s.finished_at),
        }
        for s in session.scalars(query)
    ]


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """'24h', '30m', '7d' (ago) or an ISO 8601 time → an aware UTC datetime."""
    now = now or utcnow()
    m = _AGO.match(text.strip())
    if m:
        unit = {"m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return now - timedelta(seconds=int(m.group(1)) * unit)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"--since {text!r}: give 24h, 30m, 7d or an ISO 8601 time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=now.tzinfo)


def history(session: Session, *, since: datetime, every: str = "hour") -> list[dict[str, Any]]:
    """Device-image status changes since SINCE, counted per time bucket and new status."""
    if every not in BUCKETS:
        raise UsageError(f"--every must be one of {', '.join(BUCKETS)}")
    step = BUCKETS[every]
    rows = session.execute(
        select(Event.at, Event.to_status)
        .where(Event.at >= since, Event.kind == "device_image")
        .order_by(Event.at)
        .limit(HISTORY_MAX_EVENTS)
    )
    buckets: dict[int, Counter[str]] = {}
    for at, status in rows:
        start = int(at.timestamp()) // step * step
        buckets.setdefault(start, Counter())[status or "?"] += 1
    return [
        {"start": datetime.fromtimestamp(start, since.tzinfo).isoformat(), "counts": dict(c)}
        for start, c in sorted(buckets.items())
    ]
