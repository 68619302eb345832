"""Device images and the event log: every status change of a device image goes through
:func:`transition_image`, which asks the pure state machine (``deltaport.fleet.states``),
writes compare-and-set and appends to the event log. Callers own the transaction
(``deltaport.fleet.db.session_scope``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from deltaport.errors import StateError
from deltaport.fleet import bulk
from deltaport.fleet.documents import Inventory
from deltaport.fleet.models import (
    Device,
    DeviceImage,
    Event,
    Image,
    utcnow,
)
from deltaport.fleet.queries import IN_CHUNK, in_chunks
from deltaport.fleet.states import (
    ImageEvent,
    ImageStatus,
    Outcome,
    apply_message,
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
    for chunk in in_chunks(list(message_ids), IN_CHUNK):
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
    unknown = sorted(reported - known_image_ids(session, reported))
    if unknown:
        raise StateError(
            f"device {device.name!r} reports images that were never registered: "
            + ", ".join(unknown)
        )
    change = _apply_inventory(session, device.id, reported)
    device.last_seen = utcnow()
    return change


def record_checkin(session: Session, *, device_id: int, inventory: Inventory) -> list[str]:
    """A device's check-in: the database learns its registered images, and when it was
    seen; the image IDs deltaport never registered are ignored and returned (sorted).

    Three statements and no ORM rows (a hub answers ~170 of these a second at 100,000
    devices): the known IDs, the device's image statuses, and ``last_seen``.
    """
    reported = inventory.image_ids
    known = known_image_ids(session, reported)
    _apply_inventory(session, device_id, known)
    session.execute(update(Device).where(Device.id == device_id).values(last_seen=utcnow()))
    return sorted(reported - known)


def known_image_ids(session: Session, image_ids: Iterable[str]) -> set[str]:
    """The IDs among IMAGE_IDS that some registration has (one indexed query, IDs only)."""
    wanted = sorted(set(image_ids))
    found: set[str] = set()
    for chunk in in_chunks(wanted, IN_CHUNK):
        found.update(session.scalars(select(Image.image_id).where(Image.image_id.in_(chunk))))
    return found


def _apply_inventory(session: Session, device_id: int, reported: Set[str]) -> InventoryChange:
    """Present what REPORTED lists, gone what was present and is not (known IDs only)."""
    held = dict(session.execute(  # Core rows: (image ID, status), nothing loaded
        select(DeviceImage.image_id, DeviceImage.status).where(DeviceImage.device_id == device_id)
    ).tuples().all())
    present = ImageStatus.PRESENT.value
    now_present = [i for i in sorted(reported) if held.get(i) != present]
    now_removed = [i for i, s in sorted(held.items()) if i not in reported and s == present]
    for image_id in now_present:
        transition_image(
            session, device_id=device_id, image_id=image_id, event=ImageEvent.REPORTED_PRESENT
        )
    for image_id in now_removed:
        transition_image(
            session, device_id=device_id, image_id=image_id, event=ImageEvent.REPORTED_GONE
        )
    return InventoryChange(tuple(now_present), tuple(now_removed))


def device_statuses(session: Session, device_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    """device id → {image ID: status} for the given devices (chunked IN lists)."""
    out: dict[int, dict[str, str]] = {d: {} for d in device_ids}
    conn = session.connection()  # Core rows: no ORM overhead for 100,000s of rows
    for chunk in in_chunks(list(device_ids), IN_CHUNK):
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


