"""What the device endpoints read: bundles waiting for a device, one bundle, the desired manifest.

Keyword-only functions over a Session (the caller owns the transaction), returning
plain values the routers turn into JSON. A bundle is *for* a device when the
pipeline linked them (``bundle_devices``); it is *waiting* while the device image it
carries is ``in_transit``, or ``failed`` with a ``deferred: `` reason (the agent
keeps it and retries, docs/hub-api.md). Each offer names its *sources*: the images
present on the device whose layers the bundle reads, which the agent's GC keeps
(docs/device-runtime.md §5).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from deltaport.errors import AccessError, StorageError, UnknownObjectError
from deltaport.fleet import deployment_sets, queries
from deltaport.fleet.models import Bundle, BundleDevice, DeploymentSet, Device, DeviceImage
from deltaport.fleet.states import ImageStatus
from deltaport.pipelines.image_to_device import bundle_store_key
from deltaport.pipelines.manifest_to_device import desired_version_key
from deltaport.storage.base import BundleStore

API = "/api/v1/device"
DEFERRED_PREFIX = "deferred: "


@dataclass(frozen=True)
class BundleFile:
    """A bundle a device may download: where it is in the store and what it is."""

    store_key: str
    digest: str
    size: int
    targets: tuple[str, ...] = ()  # the image IDs it rebuilds
    deployment: str | None = None  # the deployment set it was built for


def bundle_url(digest: str) -> str:
    """The hub path a device downloads a bundle from."""
    return f"{API}/bundles/{digest}"


def waiting_bundles(
    session: Session, *, device: Device, limit: int, sources_limit: int = 100
) -> list[dict[str, Any]]:
    """The offers of ``GET /bundles`` for DEVICE, in download order, at most LIMIT.

    Most urgent deployment first (lowest ``priority``), then the oldest, then in the
    order the device images were recorded; each offer carries its set's priority so
    the agent's own sort (lowest first, ties in list order) keeps this order, and
    at most SOURCES_LIMIT source image IDs.
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
    holders = _present_layers(session, device.id) if rows else {}
    return [
        {
            "digest": bundle.digest,
            "url": bundle_url(bundle.digest),
            "size": bundle.size,
            "deployment": di.deployment_set_id,
            "priority": priority or 0,
            "target": names[di.image_id].name if di.image_id in names else None,
            "image_id": di.image_id,
            "sources": source_images(bundle.sources, holders, sources_limit),
        }
        for di, bundle, priority in rows
    ]


def _present_layers(session: Session, device_id: int) -> dict[str, frozenset[str]]:
    """Image ID → its diff_ids, for every image present on the device."""
    present = session.scalars(
        select(DeviceImage.image_id).where(
            DeviceImage.device_id == device_id, DeviceImage.status == ImageStatus.PRESENT.value
        )
    )
    return {
        image_id: frozenset(image.diff_ids)
        for image_id, image in queries.images_by_content(session, present).items()
    }


def source_images(
    sources: Iterable[str], holders: dict[str, frozenset[str]], limit: int
) -> list[str]:
    """The image IDs in HOLDERS holding any of the SOURCES diff_ids, sorted, at most LIMIT."""
    wanted = frozenset(sources)
    return sorted(i for i, layers in holders.items() if layers & wanted)[:limit]


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
    return BundleFile(
        bundle_store_key(bundle.key),
        bundle.digest,
        bundle.size,
        tuple(str(t) for t in bundle.targets),
        bundle.deployment_set_id,
    )


@dataclass(frozen=True)
class PublishedManifest:
    """The newest desired manifest of a device, as served."""

    version: int
    digest: str  # sha256 of DATA (the ETag)
    data: bytes


def desired_manifest(
    session: Session, store: BundleStore, *, device: Device, limit: int
) -> PublishedManifest:
    """The newest signed desired manifest published for DEVICE (by its committed row).

    Raises:
        UnknownObjectError: none published yet (404).
        StorageError: its file is missing, larger than LIMIT, unreadable, or does not
            hash to the digest recorded when it was published.
    """
    row = deployment_sets.latest_desired_manifest(session, device_id=device.id)
    if row is None:
        raise UnknownObjectError(f"unknown desired manifest: none published for {device.name} yet")
    key = desired_version_key(device.name, row.version)
    if not store.exists(key):
        raise StorageError(f"desired manifest v{row.version} of {device.name} is missing ({key})")
    with store.open(key) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise StorageError(f"desired manifest of {device.name} is larger than {limit} bytes")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if digest != row.digest:
        raise StorageError(
            f"desired manifest v{row.version} of {device.name} in the store is not the one "
            f"published ({digest}, recorded {row.digest})"
        )
    return PublishedManifest(row.version, digest, data)

