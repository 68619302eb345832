"""The read-only queries a dashboard needs: JSON-ready dicts, shared by CLI and hub."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from deltaport.errors import UsageError
from deltaport.fleet import deployment_sets, device_images, queries
from deltaport.fleet.models import (
    DeploymentDevice,
    DeploymentImage,
    DeploymentSet,
    DesiredManifest,
    Device,
    DeviceDeployment,
    DeviceImage,
    DeviceModule,
    Event,
    Image,
    PatchBuild,
    QueuedDeployment,
    utcnow,
)
from deltaport.fleet.runtime import device_modules
from deltaport.fleet.states import ActivationState, ImageStatus

BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}
HISTORY_MAX_EVENTS = 1_000_000  # history reads at most this many events
_AGO = re.compile(r"^(\d+)\s*([mhd])$")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def deployment_status(session: Session, set_id: str) -> dict[str, Any]:
    """A deployment set, with each device's status for each of its images.

    A deployment whose patches build in workers (``deltaport.jobs``) says ``builds``
    (patches done / needed); before it is recorded its state is ``building`` (or
    ``failed``, with ``error``) and it has no devices yet.
    """
    queued = session.get(QueuedDeployment, set_id)
    if queued is not None and session.get(DeploymentSet, set_id) is None:
        return _queued_status(session, queued)
    doc = _set_status(session, set_id)
    if queued is not None:
        doc["builds"] = _builds(session, set_id)
    return doc


def _builds(session: Session, set_id: str) -> dict[str, int]:
    done, total = session.execute(
        select(func.count(PatchBuild.done_at), func.count())
        .where(PatchBuild.deployment_id == set_id)
    ).one()
    return {"done": int(done), "total": int(total)}


def _queued_status(session: Session, queued: QueuedDeployment) -> dict[str, Any]:
    """A deployment still building its patches (or failed assembling): no devices yet."""
    request = queued.request
    modules = request.get("manifest", {}).get("modules", [])
    return {
        "id": queued.id,
        "state": queued.state,
        "priority": request.get("priority", 0),
        "requested_by": request.get("requested_by"),
        "contact_email": request.get("contact_email"),
        "created_at": _iso(queued.created_at),
        "finished_at": _iso(queued.finished_at),
        "images": list(dict.fromkeys(m["reference"] for m in modules)),
        "counts": {},
        "activation_counts": {},
        "devices": [],
        "builds": _builds(session, queued.id),
        "error": queued.error,
    }


def _set_status(session: Session, set_id: str) -> dict[str, Any]:
    dset = deployment_sets.get_deployment_set(session, set_id)
    devices, members = deployment_sets.set_members(session, set_id)
    images = [session.get(Image, m.image_id) for m in members]
    statuses = device_images.device_statuses(session, [d.id for d in devices])
    arrived = {
        m.device_id: m.arrived_at
        for m in session.scalars(
            select(DeploymentDevice).where(DeploymentDevice.deployment_set_id == set_id)
        )
    }
    activations = _activations(session, set_id)
    published = _published_versions(session, set_id)
    rows, counts, states = [], Counter[str](), Counter[str]()
    for d in devices:
        per = {
            img.name: statuses[d.id].get(img.image_id, ImageStatus.ABSENT.value)
            for img in images
            if img is not None
        }
        counts.update(per.values())
        activation = _activation_doc(activations.get(d.id), arrived.get(d.id), published.get(d.id))
        states[activation["state"]] += 1
        rows.append(
            {
                "device": d.name,
                "images": per,
                "arrived_at": _iso(arrived.get(d.id)),
                "activation": activation,
            }
        )
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
        "activation_counts": dict(states),
        "devices": rows,
    }


def _activations(session: Session, set_id: str) -> dict[int, DeviceDeployment]:
    return {
        r.device_id: r
        for r in session.scalars(
            select(DeviceDeployment).where(DeviceDeployment.deployment_set_id == set_id)
        )
    }


def _published_versions(session: Session, set_id: str) -> dict[int, int]:
    """Device id → the newest desired-manifest version published for this set."""
    rows = session.execute(
        select(DesiredManifest.device_id, func.max(DesiredManifest.version))
        .where(DesiredManifest.deployment_set_id == set_id)
        .group_by(DesiredManifest.device_id)
    )
    return {d: int(v) for d, v in rows}


def _activation_doc(
    row: DeviceDeployment | None, arrived: datetime | None, published: int | None
) -> dict[str, Any]:
    """A device's activation of a set: what the agent said, else delivered / pending."""
    if row is None:
        state = ActivationState.DELIVERED if arrived is not None else ActivationState.PENDING
        return {
            "state": state.value,
            "version": None,
            "published_version": published,
            "reason": None,
            "detail": None,
            "updated_at": _iso(arrived),
        }
    return {
        "state": row.state,
        "version": row.version,
        "published_version": published,
        "reason": row.reason,
        "detail": row.detail,
        "updated_at": _iso(row.updated_at),
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
        "runtime": runtime_status(session, device),
    }


def runtime_status(session: Session, device: Device) -> dict[str, Any]:
    """What DEVICE should run (the newest published desired manifest) next to what it
    runs (its latest runtime report), module by module."""
    latest = deployment_sets.latest_desired_manifest(session, device_id=device.id)
    desired = _desired_images(session, latest.deployment_set_id) if latest is not None else {}
    reported = {m.module: m for m in device_modules(session, device_id=device.id)}
    modules = [
        _module_doc(name, desired.get(name), reported.get(name))
        for name in sorted(desired.keys() | reported.keys())
    ]
    running = (
        {"id": device.runtime_deployment_set_id, "version": device.runtime_version}
        if device.runtime_deployment_set_id is not None
        else None
    )
    return {
        "desired": None
        if latest is None
        else {
            "deployment": latest.deployment_set_id,
            "version": latest.version,
            "published_at": _iso(latest.published_at),
        },
        "running": running,
        "last_attempt": device.runtime_last_attempt,
        "reported_at": _iso(device.runtime_reported_at),
        "report_digest": device.runtime_digest,
        "modules": modules,
    }


def _desired_images(session: Session, set_id: str) -> dict[str, tuple[str, str]]:
    """Module → (image name, image ID) in deployment set SET_ID's manifest."""
    dset = session.get(DeploymentSet, set_id)
    if dset is None:
        return {}
    by_reference: dict[str, tuple[str, str]] = {}
    for ref, name, image_id in session.execute(
        select(DeploymentImage.reference, Image.name, Image.image_id)
        .join(Image, Image.id == DeploymentImage.image_id)
        .where(DeploymentImage.deployment_set_id == set_id)
    ):
        by_reference[ref] = by_reference[name] = (name, image_id)
    out = {}
    for m in dset.manifest.get("modules", []):
        found = by_reference.get(m["reference"])
        out[m["module"]] = found if found is not None else (m["reference"], "")
    return out


def _module_doc(
    module: str, desired: tuple[str, str] | None, row: DeviceModule | None
) -> dict[str, Any]:
    running = row.running_image_id if row is not None else None
    desired_id = desired[1] if desired is not None and desired[1] else None
    return {
        "module": module,
        "desired_image": desired[0] if desired is not None else None,
        "desired_image_id": desired_id,
        "reported_desired_image_id": row.desired_image_id if row is not None else None,
        "running_image_id": running,
        "matches": desired_id is not None and desired_id == running,
        "runtime_status": row.runtime_status if row is not None else None,
        "health": row.health if row is not None else None,
        "exit_code": row.exit_code if row is not None else None,
        "restart_count": row.restart_count if row is not None else None,
        "started_at": _iso(row.started_at) if row is not None else None,
        "exited_at": _iso(row.exited_at) if row is not None else None,
        "status_description": row.status_description if row is not None else None,
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
    """Recent deployment sets, newest first, optionally only those ordered by BY; with
    the deployments still building in workers (or failed so), not recorded as sets."""
    query = select(DeploymentSet).order_by(DeploymentSet.created_at.desc()).limit(limit)
    if by:
        query = query.where(DeploymentSet.requested_by == by)
    rows = [
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
    unrecorded = select(QueuedDeployment).where(
        QueuedDeployment.id.not_in(select(DeploymentSet.id))
    ).order_by(QueuedDeployment.created_at.desc()).limit(limit)
    for q in session.scalars(unrecorded):
        doc = _queued_status(session, q)
        if not by or doc["requested_by"] == by:
            rows.append({k: doc[k] for k in ("id", "state", "priority", "requested_by",
                                             "contact_email", "created_at", "finished_at")})
    rows.sort(key=lambda r: str(r["created_at"] or ""), reverse=True)
    return rows[:limit]


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
