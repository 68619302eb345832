"""Manifest-to-device (`deltaport activate`): switch devices to a deployment's manifest.

Only when every image of the deployment set is ``present`` on every one of its
devices: otherwise fail with the list of what is missing. Then publish, per device,
the desired manifest with image references rewritten to the device's local registry
(``devices/<name>/desired.json`` in the bundle store), for the agent to fetch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from deltaport.errors import StateError
from deltaport.fleet import queries
from deltaport.fleet.models import DeploymentSet, Device, Image
from deltaport.fleet.states import ImageStatus, SetEvent, SetState
from deltaport.pipelines.manifest import Manifest, ModuleImage, local_reference, rewrite_for_device
from deltaport.storage.base import BundleStore

MISSING_LISTED_MAX = 50  # lines of "what is missing" in an error message


@dataclass(frozen=True)
class MissingImage:
    """One image of the set that is not present on one device."""

    device: str
    image: str  # name:tag
    status: str  # absent | in_transit | failed | removed


@dataclass(frozen=True)
class Activation:
    """What `activate` published."""

    deployment_id: str
    desired: dict[str, str]  # device name → location of its desired manifest


def desired_key(device_name: str) -> str:
    """Store key of a device's desired manifest."""
    return f"devices/{device_name}/desired.json"


def missing_images(session: Session, set_id: str) -> list[MissingImage]:
    """Every (device, image) of the set that is not present, device by device."""
    devices, members = queries.set_members(session, set_id)
    images = [session.get(Image, m.image_id) for m in members]
    statuses = queries.device_statuses(session, [d.id for d in devices])
    missing = []
    for device in devices:
        have = statuses.get(device.id, {})
        for img in images:
            assert img is not None  # FK guarantees it
            status = have.get(img.image_id, ImageStatus.ABSENT.value)
            if status != ImageStatus.PRESENT.value:
                missing.append(MissingImage(device.name, img.name, status))
    return missing


def describe_missing(set_id: str, missing: list[MissingImage]) -> str:
    """A message listing what is missing, cut at MISSING_LISTED_MAX lines."""
    devices = len({m.device for m in missing})
    lines = [f"  {m.device}: {m.image} ({m.status})" for m in missing[:MISSING_LISTED_MAX]]
    if len(missing) > MISSING_LISTED_MAX:
        lines.append(f"  ... and {len(missing) - MISSING_LISTED_MAX} more")
    head = f"deployment {set_id} cannot be activated: {len(missing)} image(s) missing"
    return f"{head} on {devices} device(s):\n" + "\n".join(lines)


def activate(session: Session, *, set_id: str, store: BundleStore) -> Activation:
    """Publish the desired manifest of SET_ID for each device, if everything arrived.

    Raises:
        UnknownObjectError: unknown deployment.
        StateError: some image is not present (all listed).
        StorageError: the store cannot be written.
    """
    dset = queries.get_deployment_set(session, set_id)
    missing = missing_images(session, set_id)
    if missing:
        raise StateError(describe_missing(set_id, missing))
    if SetState(dset.state) in (SetState.PENDING, SetState.FAILED):
        queries.transition_set(session, dset, SetEvent.ALL_PRESENT, "checked at activation")
    devices, _ = queries.set_members(session, set_id)
    manifest = stored_manifest(dset)
    published = {d.name: _publish(store, dset, manifest, d) for d in devices}
    queries.transition_set(session, dset, SetEvent.ACTIVATE)
    return Activation(deployment_id=set_id, desired=published)


def stored_manifest(dset: DeploymentSet) -> Manifest:
    """The manifest as recorded with the deployment set."""
    doc: dict[str, Any] = dset.manifest
    modules = tuple(ModuleImage(m["module"], m["reference"]) for m in doc["modules"])
    return Manifest(kind=dset.manifest_kind, document=doc["document"], modules=modules)


def _publish(store: BundleStore, dset: DeploymentSet, manifest: Manifest, device: Device) -> str:
    desired = {
        "deployment": dset.id,
        "kind": manifest.kind,
        "images": [
            {"module": m.module, "reference": local_reference(m.reference, device.local_registry)}
            for m in manifest.modules
        ],
        "manifest": rewrite_for_device(manifest, device.local_registry),
    }
    data = json.dumps(desired, indent=2, sort_keys=True).encode()
    return store.put_bytes(desired_key(device.name), data)
