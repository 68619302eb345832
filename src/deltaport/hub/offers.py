"""What the device endpoints read: bundles waiting for a device, one bundle, the desired manifest.

Keyword-only functions over a Session (the caller owns the transaction), returning
plain values the routers turn into JSON. A bundle is *for* a device when the
pipeline linked them (``bundle_devices``); it is *waiting* while the device image it
carries is ``in_transit``, or ``failed`` with a ``deferred: `` reason (the agent
keeps it and retries, docs/hub-api.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from deltaport.errors import AccessError, StorageError, UnknownObjectError
from deltaport.fleet import queries
from deltaport.fleet.models import Bundle, BundleDevice, DeploymentSet, Device, DeviceImage
from deltaport.fleet.states import ImageStatus
from deltaport.pipelines.image_to_device import bundle_store_key
from deltaport.pipelines.manifest_to_device import desired_key
from deltaport.storage.base import BundleStore

API = "/api/v1/device"
DEFERRED_PREFIX = "deferred: "


@dataclass(frozen=True)
class BundleFile:
    """A bundle a device may download: where it is in the store and what it is."""

    store_key: str
    digest: str
    size: int


def bundle_url(digest: str) -> str:
    """The hub path a device downloads a bundle from."""
    return f"{API}/bundles/{digest}"


def waiting_bundles(session: Session, *, device: Device, limit: int) -> list[dict[str, Any]]:
    """The offers of ``GET /bundles`` for DEVICE, in download order, at most LIMIT.

    Most urgent deployment first (lowest ``priority``), then the oldest, then in the
    order the device images were recorded; each offer carries its set's priority so
    the agent's own sort (lowest first, ties in list order) keeps this order.
    """
    rows = session.execute(
        select(DeviceImage, Bundle, DeploymentSet.priority)
        .join(Bundle, Bundle.id == DeviceImage.bundle_id)
        .outerjoin(DeploymentSet, DeploymentSet.id == DeviceImage.deployment_set_id)
        .where(
            DeviceImage.device_id == device.id,
            or_(
                DeviceImage.status == ImageStatus.IN_TRANSIT.value,
                (DeviceImage.status == ImageStatus.FAILED.value)
                & DeviceImage.failure_reason.startswith(DEFERRED_PREFIX),
            ),
        )
        .order_by(
            func.coalesce(DeploymentSet.priority, 0), DeploymentSet.created_at, DeviceImage.id
        )
        .limit(limit)
    ).all()
    names = queries.images_by_content(session, {di.image_id for di, _, _ in rows})
    return [
        {
            "digest": bundle.digest,
            "url": bundle_url(bundle.digest),
            "size": bundle.size,
            "deployment": di.deployment_set_id,
            "priority": priority or 0,
            "target": names[di.image_id].name if di.image_id in names else None,
            "image_id": di.image_id,
        }
        for di, bundle, priority in rows
    ]


def bundle_for_device(session: Session, *, device: Device, digest: str) -> BundleFile:
    """The bundle with DIGEST, if it was sent to DEVICE.

    Raises:
        UnknownObjectError: no bundle has this digest (404).
        AccessError: (403) it exists but was not sent to this device.
    """
    bundles = list(session.scalars(select(Bundle).where(Bundle.digest == digest)))
    if not bundles:
        raise UnknownObjectError(f"unknown bundle {digest}")
    linked = session.scalar(
        select(BundleDevice.bundle_id)
        .where(
            BundleDevice.device_id == device.id,
            BundleDevice.bundle_id.in_([b.id for b in bundles]),
        )
        .limit(1)
    )
    if linked is None:
        raise AccessError(f"bundle {digest} was not sent to device {device.name}", 403)
    bundle = next(b for b in bundles if b.id == linked)
    return BundleFile(bundle_store_key(bundle.key), bundle.digest, bundle.size)


def desired_manifest(store: BundleStore, *, device: Device, limit: int) -> bytes:
    """The desired manifest published for DEVICE.

    Raises:
        UnknownObjectError: none published yet (404). StorageError: larger than LIMIT or unreadable.
    """
    key = desired_key(device.name)
    if not store.exists(key):
        raise UnknownObjectError(f"unknown desired manifest: none published for {device.name} yet")
    with store.open(key) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise StorageError(f"desired manifest of {device.name} is larger than {limit} bytes")
    return data
