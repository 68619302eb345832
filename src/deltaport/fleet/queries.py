"""Data access for the fleet: keyword-only functions over a Session.

Devices and images. Device images and the event log are in
``deltaport.fleet.device_images``, deployment sets and desired manifests in
``deltaport.fleet.deployment_sets``. Callers own the transaction
(``deltaport.fleet.db.session_scope``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from deltaport.errors import StateError, UnknownObjectError, UsageError
from deltaport.fleet.identity import ImageIdentity, ImageInfo
from deltaport.fleet.models import (
    Device,
    Image,
    utcnow,
)
from deltaport.manifests import normalize_reference
from deltaport.manifests.reference import familiar_repository

DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmg]?)(bit|bps|b)?(?:/s)?\s*$", re.IGNORECASE)
IN_CHUNK = 5000  # values per IN (...) list: PostgreSQL allows 65535 parameters
T = TypeVar("T")
_RATE_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


# --- devices -----------------------------------------------------------------


def parse_link_rate(text: str) -> int:
    """'1Mbit', '512kbit', '2.5Mbit/s', '64000' → bits per second.

    Raises:
        UsageError: not a positive rate.
    """
    m = _RATE.match(text)
    if not m:
        raise UsageError(f"cannot read link rate {text!r} (examples: 1Mbit, 512kbit, 64000)")
    bps = int(float(m.group(1)) * _RATE_UNITS[m.group(2).lower()])
    if bps <= 0:
        raise UsageError(f"link rate {text!r} must be positive")
    return bps


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """['site=mine-3', 'tier=a'] → {'site': 'mine-3', 'tier': 'a'}."""
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not LABEL_KEY.match(key):
            raise UsageError(f"label {item!r} must look like key=value")
        labels[key] = value
    return labels


def new_token() -> str:
    """A fresh device token (shown once, stored only as a hash)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of a token. Tokens are 256-bit random, so one SHA-256 suffices."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def add_device(
    session: Session,
    *,
    name: str,
    link_rate_bps: int,
    labels: Mapping[str, str] | None = None,
    local_registry: str = "localhost:5000",
) -> tuple[Device, str]:
    """Create a device; returns it and its token (the only time the token exists in clear).

    Raises:
        UsageError: the name is not a valid device name.
        StateError: a device with that name exists.
    """
    if not DEVICE_NAME.fullmatch(name):
        raise UsageError(f"invalid device name {name!r}")
    if session.scalar(select(Device.id).where(Device.name == name)) is not None:
        raise StateError(f"device {name!r} already exists")
    token = new_token()
    device = Device(
        name=name,
        token_hash=hash_token(token),
        link_rate_bps=link_rate_bps,
        labels=dict(labels or {}),
        local_registry=local_registry,
    )
    session.add(device)
    session.flush()
    return device, token


def get_device(session: Session, name: str) -> Device:
    """The device called NAME.

    Raises:
        UnknownObjectError: no device has that name.
    """
    device = session.scalar(select(Device).where(Device.name == name))
    if device is None:
        raise UnknownObjectError(f"unknown device {name!r}")
    return device


def authenticate_device(session: Session, *, name: str, token: str) -> Device:
    """The device if TOKEN is its token; StateError otherwise (same message either way)."""
    device = session.scalar(select(Device).where(Device.name == name))
    expected = device.token_hash if device is not None else hash_token("")
    if device is None or not hmac.compare_digest(expected, hash_token(token)):
        raise StateError(f"unknown device {name!r} or wrong token")
    return device


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """The few device fields planning needs (cheap to load for 100,000 devices)."""

    id: int
    name: str
    link_rate_bps: int


def select_devices(
    session: Session, *, names: Sequence[str] = (), labels: Mapping[str, str] | None = None
) -> list[DeviceRef]:
    """Devices named in NAMES, plus devices carrying every label in LABELS.

    Raises:
        UnknownObjectError: a name is unknown (all unknown names are listed), or
            nothing matched.
    """
    cols = (Device.id, Device.name, Device.link_rate_bps)
    found: dict[int, DeviceRef] = {}
    if names:
        wanted = sorted(set(names))
        for chunk in in_chunks(wanted, IN_CHUNK):
            for i, n, r in session.execute(select(*cols).where(Device.name.in_(chunk))):
                found[i] = DeviceRef(i, n, r)
        unknown = sorted(set(wanted) - {d.name for d in found.values()})
        if unknown:
            raise UnknownObjectError(f"unknown devices: {', '.join(unknown)}")
    if labels:
        for i, n, r, have in session.execute(select(*cols, Device.labels)):
            if all(have.get(k) == v for k, v in labels.items()):
                found[i] = DeviceRef(i, n, r)
    if not found:
        raise UnknownObjectError("no devices selected (give --devices or a --label that matches)")
    return sorted(found.values(), key=lambda d: d.name)


# --- images ------------------------------------------------------------------


def register_image(
    session: Session,
    *,
    name: str,
    identity: ImageIdentity,
    build_id: str | None = None,
    signature_path: str | None = None,
    registered_by: str | None = None,
) -> Image:
    """Record NAME as pointing at IDENTITY; registering the same pair again updates it."""
    name = normalize_reference(name)
    image = session.scalar(
        select(Image).where(Image.name == name, Image.image_id == identity.image_id)
    )
    if image is None:
        image = Image(name=name, image_id=identity.image_id)
        session.add(image)
    image.manifest_digest = identity.manifest_digest
    image.diff_ids = list(identity.diff_ids)
    image.layer_sizes = list(identity.layer_sizes)
    image.build_id = build_id
    image.signature_path = signature_path
    image.registered_by = registered_by
    image.registered_at = utcnow()
    session.flush()
    return image


def find_image(session: Session, reference: str) -> Image:
    """The latest registration for REFERENCE (name:tag, name@digest, or an image ID).

    Raises:
        UnknownObjectError: nothing registered under that reference.
    """
    ref = normalize_reference(reference)
    query = select(Image).order_by(Image.registered_at.desc(), Image.id.desc()).limit(1)
    if reference.startswith("sha256:"):
        query = query.where(Image.image_id == reference)
    elif "@" in ref:
        # a pin: the registration of that manifest in the same repository, under any tag
        # or the pin itself (the tag of ``name:tag@digest`` is ignored, as Docker does)
        name, _, digest = ref.partition("@")
        repository = familiar_repository(name)
        query = query.where(Image.manifest_digest == digest, or_(
            Image.name.startswith(repository + ":", autoescape=True),
            Image.name.startswith(repository + "@", autoescape=True)))
    else:
        query = query.where(Image.name == ref)
    image = session.scalar(query)
    if image is None:
        raise UnknownObjectError(
            f"image {reference!r} is not registered (run: deltaport image register)"
        )
    return image


def images_by_content(session: Session, image_ids: Iterable[str]) -> dict[str, Image]:
    """One registration per content image ID (the latest), for the IDs that are known."""
    wanted = set(image_ids)
    found: dict[str, Image] = {}
    if not wanted:
        return found
    rows = session.scalars(
        select(Image).where(Image.image_id.in_(wanted)).order_by(Image.registered_at, Image.id)
    )
    for img in rows:
        found[img.image_id] = img
    return found


def image_info(image: Image) -> ImageInfo:
    """The planner's view of a registered image."""
    return ImageInfo(
        name=image.name,
        image_id=image.image_id,
        diff_ids=tuple(image.diff_ids),
        layer_sizes=tuple(int(s) for s in image.layer_sizes),
        signature_path=image.signature_path,
        manifest_digest=image.manifest_digest,
    )


def in_chunks(items: list[T], size: int) -> Iterable[list[T]]:
    """ITEMS in lists of at most SIZE (for IN (...) lists, ``IN_CHUNK``)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
