"""Manifest-to-device (`deltaport activate`): switch devices to a deployment's manifest.

Only when every image of the deployment set is ``present`` on every one of its
devices: otherwise fail with the list of what is missing. Then publish, per device,
the **signed, versioned** desired manifest of docs/device-runtime.md §1: the
deployment document with image references rewritten to the device's local
registry, each module's local reference and image ID, signed with the hub's
manifest key (``DATA_DIR/keys/manifest.key``, not the bundle key).

Versions are per device and only go up: each publication takes max + 1 from
``desired_manifests`` in the activating transaction. Two hubs publishing for the
same device at once both read the same max; the unique (device, version) makes the
second insert nothing (``deployment_sets.insert_desired_manifest``), and it signs again with
the next number, up to ``PUBLISH_ATTEMPTS`` times.

The envelope is stored under a key of its own per version (``devices/<name>/desired/
v<version>.json``, written once the row is inserted, before it commits), and the hub
serves the one the newest committed row names, checked against the row's digest — so
two publishers finishing in either order cannot leave an older version served.
``devices/<name>/desired.json`` gets a copy too, for tools that read the store directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from deltaport.bundle.signing import Signer
from deltaport.desired import DesiredModule, DesiredState, ManifestKind, encode_envelope
from deltaport.desired.window import WINDOW_FIELD, WINDOW_LABEL, parse_window
from deltaport.errors import FormatError, StateError
from deltaport.fleet import deployment_sets, device_images
from deltaport.fleet.models import DeploymentSet, Device, Image, utcnow
from deltaport.fleet.states import FINISHED_SET_STATES, ImageStatus, SetEvent, SetState
from deltaport.manifests.model import Locate
from deltaport.pipelines.manifest import (
    Manifest,
    ModuleImage,
    normalize_reference,
    rewrite_for_device,
)
from deltaport.storage.base import BundleStore
from deltaport.trust import Role
from deltaport.trust.files import load_signer

MISSING_LISTED_MAX = 50  # lines of "what is missing" in an error message
MANIFEST_KEY_NAME = "manifest.key"  # in the data dir's keys folder; manifest.pub beside it
MANIFEST_PUBLIC_KEY_NAME = "manifest.pub"
PUBLISH_ATTEMPTS = 5  # versions tried per device when concurrent hubs take the same one


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
    versions: dict[str, int]  # device name → the version published


def activation_doc(result: Activation) -> dict[str, Any]:
    """The JSON `deltaport activate --json` prints and the operator API answers."""
    return {
        "deployment": result.deployment_id,
        "desired": result.desired,
        "versions": result.versions,
    }


def desired_key(device_name: str) -> str:
    """Store key of the copy of a device's newest desired manifest (for store readers)."""
    return f"devices/{device_name}/desired.json"


def desired_version_key(device_name: str, version: int) -> str:
    """Store key of one version of a device's desired manifest (what the hub serves)."""
    return f"devices/{device_name}/desired/v{version}.json"


def manifest_key_path(keys_dir: Path) -> Path:
    """Where the hub's manifest-signing key lives in KEYS_DIR."""
    return keys_dir / MANIFEST_KEY_NAME


def load_manifest_key(path: Path) -> Ed25519PrivateKey | Signer:
    """The manifest-signing key at PATH, with the key list beside it (docs/trust.md).

    Raises:
        StateError: there is no key file (naming the command that creates one).
        FormatError / StorageError: the file is not a key, or unreadable.
        UsageError: keylist.json beside it does not certify it for the manifest role.
    """
    if not path.exists():
        raise StateError(
            f"cannot publish desired manifests: the hub's manifest key {path} does not "
            f"exist (create it: deltaport keys generate {path.parent} --name manifest; "
            "give devices manifest.pub as runtime.manifest_keys)"
        )
    return load_signer(path, Role.MANIFEST)


def missing_images(session: Session, set_id: str) -> list[MissingImage]:
    """Every (device, image) of the set that is not present, device by device."""
    devices, members = deployment_sets.set_members(session, set_id)
    images = [session.get(Image, m.image_id) for m in members]
    statuses = device_images.device_statuses(session, [d.id for d in devices])
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


def activate(
    session: Session,
    *,
    set_id: str,
    store: BundleStore,
    manifest_key: Path,
    devices: Collection[str] | None = None,
) -> Activation:
    """Publish the signed desired manifest of SET_ID for each device, if everything arrived.

    Each call publishes a new version per device (activating again is how an operator
    has a device retry a deployment it rolled back). With DEVICES (a rollout's wave),
    only those: only their images must be present, and the set becomes ``active``
    only if it is ``complete`` already.

    Raises:
        UnknownObjectError: unknown deployment.
        StateError: some image is not present (all listed); no manifest key at
            MANIFEST_KEY; other hubs kept taking the versions.
        StorageError: the store cannot be written.
    """
    dset = deployment_sets.get_deployment_set(session, set_id)
    missing = missing_images(session, set_id)
    if devices is not None:
        missing = [m for m in missing if m.device in devices]
    if missing:
        raise StateError(describe_missing(set_id, missing))
    key = load_manifest_key(manifest_key)
    if devices is None and SetState(dset.state) in (SetState.PENDING, SetState.FAILED):
        deployment_sets.transition_set(session, dset, SetEvent.ALL_PRESENT, "checked at activation")
    targets, _ = deployment_sets.set_members(session, set_id)
    if devices is not None:
        targets = [d for d in targets if d.name in devices]
    manifest = stored_manifest(dset)
    images = deployment_images(session, set_id)
    desired, versions = {}, {}
    for device in targets:
        modules = desired_modules(manifest, device.local_registry, images)
        versions[device.name], desired[device.name] = _publish(
            session, store, key, dset, manifest, modules, device,
            image_locator(images, device.local_registry),
        )
    if SetState(dset.state) in FINISHED_SET_STATES:
        deployment_sets.transition_set(session, dset, SetEvent.ACTIVATE)
    return Activation(deployment_id=set_id, desired=desired, versions=versions)


def stored_manifest(dset: DeploymentSet) -> Manifest:
    """The manifest as recorded with the deployment set."""
    doc: dict[str, Any] = dset.manifest
    modules = tuple(ModuleImage(m["module"], m["reference"]) for m in doc["modules"])
    return Manifest(kind=dset.manifest_kind, document=doc["document"], modules=modules)


@dataclass(frozen=True)
class DeployedImage:
    """An image of a deployment set: its ID and the name its bundles deliver it under."""

    image_id: str
    delivered_as: str  # repository:tag in the device's registry (a bundle's target name)

    def device_reference(self, local_registry: str) -> str:
        """Where the device's runtime finds it: ``LOCAL_REGISTRY/repository:tag``."""
        return f"{local_registry}/{self.delivered_as}"


def deployment_images(session: Session, set_id: str) -> dict[str, DeployedImage]:
    """Normalised manifest reference → the registered image it resolved to.

    A manifest's spelling and the registered name can differ (``app@sha256:…`` pinned
    in the manifest, ``ghcr.io/acme/app:1`` registered with that manifest digest): the
    device has the image under the registered name, which is what its bundle carried.
    """
    from deltaport.pipelines.adapters import delivered_name

    _, members = deployment_sets.set_members(session, set_id)
    out = {}
    for m in members:
        image = session.get(Image, m.image_id)
        assert image is not None  # FK guarantees it
        out[normalize_reference(m.reference)] = DeployedImage(image.image_id,
                                                              delivered_name(image.name))
    return out


def image_locator(images: Mapping[str, DeployedImage], local_registry: str) -> Locate:
    """A manifest reference → the device's reference for the image it resolved to.

    Raises (when called):
        StateError: the reference is not one of the deployment's images.
    """
    def locate(reference: str) -> str:
        image = images.get(normalize_reference(reference))
        if image is None:
            raise StateError(f"image {reference} is not in the deployment")
        return image.device_reference(local_registry)

    return locate


def desired_modules(
    manifest: Manifest, local_registry: str, images: Mapping[str, DeployedImage]
) -> tuple[DesiredModule, ...]:
    """Each module of MANIFEST with its device-local reference and the image ID it must have.

    Raises:
        StateError: a module's image is not one of the deployment's images.
    """
    out = []
    for m in manifest.modules:
        image = images.get(normalize_reference(m.reference))
        if image is None:
            raise StateError(f"module {m.module}: image {m.reference} is not in the deployment")
        out.append(DesiredModule(m.module, image.device_reference(local_registry),
                                 image.image_id))
    return tuple(out)


def desired_state(
    dset: DeploymentSet,
    manifest: Manifest,
    modules: tuple[DesiredModule, ...],
    device: Device,
    version: int,
    issued_at: datetime,
    locate: Locate,
) -> DesiredState:
    """The payload published for DEVICE at VERSION. Pure.

    LOCATE gives each image's reference on the device (:func:`image_locator`). A device
    labelled ``maintenance-window`` gets the window in its document, signed with it, so
    its agent activates only inside it (``deltaport.desired.window``).

    Raises:
        FormatError: the device's maintenance-window label is not a window.
    """
    document = rewrite_for_device(manifest, device.local_registry, locate)
    label = (device.labels or {}).get(WINDOW_LABEL)
    if label:
        try:
            window = parse_window(str(label))
        except FormatError as exc:
            raise FormatError(f"device {device.name}: label {WINDOW_LABEL}: {exc}") from None
        document = {**document, WINDOW_FIELD: str(window)}
    return DesiredState(
        device=device.name,
        version=version,
        deployment=dset.id,
        issued_at=issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        kind=ManifestKind(manifest.kind),
        modules=modules,
        manifest=document,
    )


def _publish(
    session: Session,
    store: BundleStore,
    key: Ed25519PrivateKey | Signer,
    dset: DeploymentSet,
    manifest: Manifest,
    modules: tuple[DesiredModule, ...],
    device: Device,
    locate: Locate,
) -> tuple[int, str]:
    """Sign and store the next version for DEVICE; (version, location of desired.json)."""
    for _ in range(PUBLISH_ATTEMPTS):
        version = deployment_sets.next_desired_version(session, device_id=device.id)
        now = utcnow()
        state = desired_state(dset, manifest, modules, device, version, now, locate)
        data = encode_envelope(state, [key])
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if deployment_sets.insert_desired_manifest(
            session,
            device_id=device.id,
            version=version,
            deployment_set_id=dset.id,
            digest=digest,
            at=now,
        ):  # the version is ours: nobody else writes its file
            store.put_bytes(desired_version_key(device.name, version), data)
            return version, store.put_bytes(desired_key(device.name), data)
    raise StateError(
        f"could not publish a desired manifest for {device.name}: other publishers took "
        f"{PUBLISH_ATTEMPTS} versions in a row; try again"
    )
