"""Data access for the fleet: keyword-only functions over a Session.

Every status change of a device image or a deployment set goes through
:func:`transition_image` / :func:`transition_set`, which ask the pure state machine
(``deltaport.fleet.states``) and append to the event log. Callers own the transaction
(``deltaport.fleet.db.session_scope``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from deltaport.errors import StateError, UnknownObjectError, UsageError
from deltaport.fleet import bulk
from deltaport.fleet.documents import Inventory
from deltaport.fleet.identity import ImageIdentity, ImageInfo
from deltaport.fleet.models import (
    DeploymentDevice,
    DeploymentImage,
    DeploymentSet,
    DesiredManifest,
    Device,
    DeviceImage,
    Event,
    Image,
    utcnow,
)
from deltaport.fleet.states import (
    FINISHED_SET_STATES,
    ImageEvent,
    ImageStatus,
    Outcome,
    SetEvent,
    SetState,
    apply_message,
    next_set_state,
)
from deltaport.manifests import normalize_reference
from deltaport.manifests.reference import familiar_repository

DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmg]?)(bit|bps|b)?(?:/s)?\s*$", re.IGNORECASE)
SET_RETRIES = 5  # re-decisions of a set transition that lost a race
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
        for chunk in _chunks(wanted, IN_CHUNK):
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


# --- device images and the event log -------------------------------------------


def log_event(
    session: Session,
    *,
    kind: str,
    device_id: int | None = None,
    image_id: str | None = None,
    deployment_set_id: str | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    detail: str | None = None,
    message_id: str | None = None,
    at: datetime | None = None,
) -> None:
    """Append one row to the event log."""
    session.add(
        Event(
            at=at or utcnow(),
            kind=kind,
            device_id=device_id,
            image_id=image_id,
            deployment_set_id=deployment_set_id,
            from_status=from_status,
            to_status=to_status,
            detail=detail,
            message_id=message_id,
        )
    )


def message_seen(session: Session, message_id: str, *, device_id: int | None = None) -> bool:
    """True if a message with this id was already applied (from DEVICE_ID, or from any)."""
    query = select(Event.id).where(Event.message_id == message_id)
    if device_id is not None:
        query = query.where(Event.device_id == device_id)
    return session.scalar(query.limit(1)) is not None


def seen_messages(
    session: Session, message_ids: Sequence[str], device_ids: Sequence[int]
) -> set[tuple[int, str]]:
    """(device id, message id) of the MESSAGE_IDS those devices already had applied.

    A message id is the device's own: the same id from another device is another message.
    """
    seen: set[tuple[int, str]] = set()
    if not device_ids:
        return seen
    for chunk in _chunks(list(message_ids), IN_CHUNK):
        rows = session.execute(
            select(Event.device_id, Event.message_id).where(
                Event.message_id.in_(chunk), Event.device_id.in_(device_ids)
            )
        )
        seen.update((d, m) for d, m in rows if d is not None and m is not None)
    return seen


def transition_image(
    session: Session,
    *,
    device_id: int,
    image_id: str,
    event: ImageEvent,
    message_id: str | None = None,
    deployment_set_id: str | None = None,
    bundle_id: int | None = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> Outcome:
    """Apply EVENT to one device image through the state machine and log it.

    With MESSAGE_ID, a message already applied changes nothing (and is not logged again).

    Raises:
        StateError: the transition is illegal from the current status.
    """
    known = message_id is not None and message_seen(session, message_id, device_id=device_id)
    seen = [message_id] if known and message_id is not None else []
    held = session.execute(  # Core: the row as the database has it, not a loaded copy
        select(DeviceImage.status).where(
            DeviceImage.device_id == device_id, DeviceImage.image_id == image_id
        )
    ).scalar()
    current = ImageStatus(held) if held is not None else ImageStatus.ABSENT
    outcome = apply_message(current, event, message_id or "", seen)
    if outcome.duplicate:
        return outcome
    now = at or utcnow()
    values: dict[str, Any] = {"status": outcome.status.value, "updated_at": now}
    if event is ImageEvent.SEND:
        values.update(bundle_id=bundle_id, deployment_set_id=deployment_set_id)
        values["failure_reason"] = None
    elif outcome.status is ImageStatus.FAILED:
        values["failure_reason"] = reason
    elif outcome.status is ImageStatus.PRESENT:
        values["failure_reason"] = None
    _write_image_status(session, device_id, image_id, current, values, now)
    log_event(
        session,
        kind="device_image",
        device_id=device_id,
        image_id=image_id,
        deployment_set_id=deployment_set_id,
        from_status=current.value,
        to_status=outcome.status.value,
        detail=reason,
        message_id=message_id,
        at=now,
    )
    return outcome


def _write_image_status(
    session: Session,
    device_id: int,
    image_id: str,
    before: ImageStatus,
    values: dict[str, Any],
    now: datetime,
) -> None:
    """Compare-and-set one device image: written only if it still holds BEFORE.

    Raises:
        StateError: the row changed since it was read (another writer got there first).
    """
    table = cast(Table, DeviceImage.__table__)
    stmt: Any
    if before is ImageStatus.ABSENT:
        dialect = session.get_bind().dialect.name
        make = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = make(table).values(device_id=device_id, image_id=image_id, created_at=now,
                                  **values).on_conflict_do_nothing(
            index_elements=["device_id", "image_id"])
    else:
        stmt = update(table).where(
            table.c.device_id == device_id, table.c.image_id == image_id,
            table.c.status == before.value,
        ).values(**values)
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT SQLAlchemy fetches keys of
    if session.execute(stmt.returning(table.c.device_id)).first() is None:
        raise StateError(
            f"device image {image_id} of device {device_id} changed meanwhile "
            f"(it was {before}): try again"
        )
    for obj in list(session.identity_map.values()):  # loaded rows now hold stale values
        if isinstance(obj, DeviceImage) and (obj.device_id, obj.image_id) == (device_id, image_id):
            session.expire(obj)


@dataclass(frozen=True)
class InventoryChange:
    """What a device report changed."""

    now_present: tuple[str, ...]  # image IDs that became present
    now_removed: tuple[str, ...]  # image IDs that were present and are gone


def record_inventory(session: Session, *, device: Device, inventory: Inventory) -> InventoryChange:
    """Make the database match what DEVICE says it has.

    Raises:
        StateError: the inventory lists images deltaport never registered (nothing is
            changed; register them first so they can serve as patch sources).
    """
    reported = inventory.image_ids
    known = images_by_content(session, reported)
    unknown = sorted(reported - known.keys())
    if unknown:
        raise StateError(
            f"device {device.name!r} reports images that were never registered: "
            + ", ".join(unknown)
        )
    rows = {
        r.image_id: r
        for r in session.scalars(select(DeviceImage).where(DeviceImage.device_id == device.id))
    }
    now_present = []
    for image_id in sorted(reported):
        row = rows.get(image_id)
        if row is None or row.status != ImageStatus.PRESENT:
            transition_image(
                session, device_id=device.id, image_id=image_id, event=ImageEvent.REPORTED_PRESENT
            )
            now_present.append(image_id)
    now_removed = []
    for image_id, row in sorted(rows.items()):
        if image_id not in reported and row.status == ImageStatus.PRESENT:
            transition_image(
                session, device_id=device.id, image_id=image_id, event=ImageEvent.REPORTED_GONE
            )
            now_removed.append(image_id)
    device.last_seen = utcnow()
    return InventoryChange(tuple(now_present), tuple(now_removed))


def device_statuses(session: Session, device_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    """device id → {image ID: status} for the given devices (chunked IN lists)."""
    out: dict[int, dict[str, str]] = {d: {} for d in device_ids}
    conn = session.connection()  # Core rows: no ORM overhead for 100,000s of rows
    for chunk in _chunks(list(device_ids), IN_CHUNK):
        rows = conn.execute(
            select(DeviceImage.device_id, DeviceImage.image_id, DeviceImage.status).where(
                DeviceImage.device_id.in_(chunk)
            )
        )
        for device_id, image_id, status in rows:
            out[device_id][image_id] = status
    return out


def send_images(
    session: Session,
    *,
    sends: Sequence[tuple[int, str, int | None]],
    current: Mapping[int, Mapping[str, str]],
    deployment_set_id: str,
) -> None:
    """Mark many (device id, image ID, bundle id) in_transit: :func:`bulk.send_images`
    (bulk, compare-and-set against CURRENT, the statuses planning saw).

    Raises:
        StateError: a send is illegal, or a device image changed since planning.
    """
    bulk.send_images(
        session, sends=sends, current=current, deployment_set_id=deployment_set_id
    )


def _chunks(items: list[T], size: int) -> Iterable[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --- deployment sets ---------------------------------------------------------


def get_deployment_set(session: Session, set_id: str) -> DeploymentSet:
    """The deployment set SET_ID.

    Raises:
        UnknownObjectError: no deployment set has that id.
    """
    dset = session.get(DeploymentSet, set_id)
    if dset is None:
        raise UnknownObjectError(f"unknown deployment {set_id!r}")
    return dset


def transition_set(
    session: Session, dset: DeploymentSet, event: SetEvent, detail: str | None = None
) -> SetState:
    """Apply EVENT to a deployment set through the state machine and log it.

    Compare-and-set (``WHERE state = :before``): if another writer moved the set
    meanwhile, the state machine decides again from the state the row now holds (the
    decision depends on nothing else), a bounded number of times.

    Raises:
        StateError: EVENT is illegal from the state the set holds, or the set kept
            changing under us.
    """
    session.flush()
    table = cast(Table, DeploymentSet.__table__)
    current = SetState(dset.state)
    for _ in range(SET_RETRIES):
        new = next_set_state(current, event)
        if new is current:
            set_committed_value(dset, "state", current.value)
            return new
        values: dict[str, Any] = {"state": new.value}
        if new in FINISHED_SET_STATES and dset.finished_at is None:
            values["finished_at"] = utcnow()
        done = session.execute(
            update(table)
            .where(table.c.id == dset.id, table.c.state == current.value)
            .values(**values)
            .returning(table.c.id)
        ).first()
        if done is not None:
            for key, value in values.items():  # what the row now holds, no second write
                set_committed_value(dset, key, value)
            log_event(
                session,
                kind="deployment_set",
                deployment_set_id=dset.id,
                from_status=current.value,
                to_status=new.value,
                detail=detail,
            )
            return new
        held = session.execute(select(table.c.state).where(table.c.id == dset.id)).scalar()
        if held is None:
            raise UnknownObjectError(f"deployment {dset.id!r} was deleted meanwhile")
        current = SetState(held)
    raise StateError(f"deployment {dset.id} kept changing meanwhile (now {current}): try again")


def set_members(session: Session, set_id: str) -> tuple[list[Device], list[DeploymentImage]]:
    """The devices and the image rows of deployment set SET_ID."""
    devices = list(
        session.scalars(
            select(Device)
            .join(DeploymentDevice, DeploymentDevice.device_id == Device.id)
            .where(DeploymentDevice.deployment_set_id == set_id)
            .order_by(Device.name)
        )
    )
    images = list(
        session.scalars(select(DeploymentImage).where(DeploymentImage.deployment_set_id == set_id))
    )
    return devices, images


def set_image_ids(session: Session, set_id: str) -> list[str]:
    """Content image IDs a deployment set needs."""
    return list(
        session.scalars(
            select(Image.image_id)
            .join(DeploymentImage, DeploymentImage.image_id == Image.id)
            .where(DeploymentImage.deployment_set_id == set_id)
        )
    )


# --- desired manifests ---------------------------------------------------------


def next_desired_version(session: Session, *, device_id: int) -> int:
    """One more than the newest desired-manifest version of the device (1 for the first)."""
    newest = session.scalar(
        select(func.max(DesiredManifest.version)).where(DesiredManifest.device_id == device_id)
    )
    return int(newest or 0) + 1


def insert_desired_manifest(
    session: Session,
    *,
    device_id: int,
    version: int,
    deployment_set_id: str,
    digest: str,
    at: datetime | None = None,
) -> bool:
    """Record VERSION as published for the device; False if that version is taken already.

    ``INSERT … ON CONFLICT DO NOTHING`` on the unique (device, version): a concurrent
    publisher that took the same number makes this insert nothing (on PostgreSQL it
    waits for that transaction to end first) instead of failing the transaction, so
    the caller can take the next number and try again.
    """
    dialect = session.get_bind().dialect.name
    make = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = (
        make(DesiredManifest)
        .values(
            device_id=device_id,
            version=version,
            deployment_set_id=deployment_set_id,
            digest=digest,
            published_at=at or utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["device_id", "version"])
        .returning(DesiredManifest.id)
    )
    return session.execute(stmt).scalar() is not None


def latest_desired_manifest(session: Session, *, device_id: int) -> DesiredManifest | None:
    """The newest desired manifest published for the device, if any."""
    return session.scalar(
        select(DesiredManifest)
        .where(DesiredManifest.device_id == device_id)
        .order_by(DesiredManifest.version.desc())
        .limit(1)
    )
