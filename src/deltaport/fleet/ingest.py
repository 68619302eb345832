"""Applying a batch of status messages to the database, fast.

Three steps so that a batch of hundreds of messages costs a handful of queries:

1. :func:`load_batch` reads, with one query each, what the batch refers to: the
   message ids already applied, the devices, the deployment sets named, and the
   current status of every (device, image) pair.
2. :func:`decide` (pure) runs every message through the state machine in order,
   against that snapshot: rejected (unknown device / deployment, illegal transition),
   duplicate (id already applied, in an earlier batch or earlier in this one),
   unchanged, or applied.
3. :func:`write` stores the applied changes in bulk (device images and the event
   log), and :func:`follow_up` advances the deployment sets they complete or fail.

The caller owns the transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from deltaport.errors import StateError
from deltaport.fleet import deployment_sets, device_images
from deltaport.fleet.documents import StatusMessage
from deltaport.fleet.models import (
    DeploymentDevice,
    DeploymentImage,
    DeploymentSet,
    Device,
    DeviceImage,
    Event,
    Image,
    utcnow,
)
from deltaport.fleet.states import (
    ImageEvent,
    ImageStatus,
    MessageOutcome,
    SetEvent,
    SetState,
    next_image_status,
)

IN_CHUNK = 5000  # values per IN (...) list
STATUS_EVENTS = {  # an image status message's "status" → what happened to the image
    "present": ImageEvent.ARRIVED,
    "failed": ImageEvent.FAILED,
    "removed": ImageEvent.REPORTED_GONE,  # the agent's GC removed it (docs/device-runtime.md §5)
}


@dataclass(frozen=True)
class Verdict:
    """What one message does."""

    message: StatusMessage
    outcome: MessageOutcome
    status: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Change:
    """One accepted status message, as a row change."""

    message: StatusMessage
    device_id: int
    before: ImageStatus
    after: ImageStatus
    exists: bool  # a device_images row exists already


@dataclass
class Snapshot:
    """What the batch refers to, as the database has it now."""

    seen: set[tuple[int, str]]  # (device id, message id) already applied
    devices: dict[str, int]  # name → id
    sets: set[str]  # deployment set ids that exist
    status: dict[tuple[int, str], str] = field(default_factory=dict)  # (device, image) → status


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), IN_CHUNK):
        yield items[i : i + IN_CHUNK]


def load_batch(session: Session, messages: Sequence[StatusMessage]) -> Snapshot:
    """Read everything MESSAGES refer to in a few queries."""
    ids = sorted({m.message_id for m in messages})
    names = sorted({m.device for m in messages})
    set_ids = sorted({m.deployment for m in messages if m.deployment})
    devices: dict[str, int] = {}
    for chunk in _chunks(names):
        devices.update(
            (n, i)
            for n, i in session.execute(
                select(Device.name, Device.id).where(Device.name.in_(chunk))
            )
        )
    seen = device_images.seen_messages(session, ids, sorted(set(devices.values())))
    sets = set(session.scalars(select(DeploymentSet.id).where(DeploymentSet.id.in_(set_ids))))
    snap = Snapshot(seen=seen, devices=devices, sets=sets)
    wanted = {m.image_id for m in messages}
    for chunk in _chunks(sorted(set(devices.values()))):
        rows = session.execute(
            select(DeviceImage.device_id, DeviceImage.image_id, DeviceImage.status).where(
                DeviceImage.device_id.in_(chunk), DeviceImage.image_id.in_(wanted)
            )
        )
        snap.status.update(((d, i), s) for d, i, s in rows)
    return snap


def decide(messages: Sequence[StatusMessage], snap: Snapshot) -> tuple[list[Verdict], list[Change]]:
    """Run each message through the state machine in order. Pure (updates SNAP only)."""
    verdicts, changes = [], []
    existing = set(snap.status)
    for msg in messages:
        verdict, change = _decide_one(msg, snap, existing)
        verdicts.append(verdict)
        if change is not None:
            changes.append(change)
    return verdicts, changes


def _decide_one(
    msg: StatusMessage, snap: Snapshot, existing: set[tuple[int, str]]
) -> tuple[Verdict, Change | None]:
    device_id = snap.devices.get(msg.device)
    if device_id is None:
        return _rejected(msg, f"unknown device {msg.device!r}"), None
    if (device_id, msg.message_id) in snap.seen:
        return Verdict(msg, MessageOutcome.DUPLICATE), None
    if msg.deployment is not None and msg.deployment not in snap.sets:
        return _rejected(msg, f"unknown deployment {msg.deployment!r}"), None
    key = (device_id, msg.image_id)
    before = ImageStatus(snap.status.get(key, ImageStatus.ABSENT.value))
    try:
        after = next_image_status(before, STATUS_EVENTS[msg.status])
    except StateError as exc:
        return _rejected(msg, f"{msg.device}: {exc}"), None
    snap.seen.add((device_id, msg.message_id))
    snap.status[key] = after.value
    change = Change(msg, device_id, before, after, key in existing)
    existing.add(key)
    outcome = MessageOutcome.APPLIED if after is not before else MessageOutcome.UNCHANGED
    return Verdict(msg, outcome, status=after.value), change


def _rejected(msg: StatusMessage, error: str) -> Verdict:
    return Verdict(msg, MessageOutcome.REJECTED, error=error)


def write(session: Session, changes: Sequence[Change]) -> None:
    """Store CHANGES: device image rows (bulk insert/update) and one event each.

    Compare-and-set: each row is written only if it still holds the status the batch
    was decided from (an absent row must still be absent); rows are written in one
    order (device, image) so concurrent writers cannot deadlock.

    Raises:
        StateError: a device image changed since :func:`load_batch` read it (another
            hub or a deploy wrote it meanwhile); nothing of the batch may be kept.
    """
    if not changes:
        return
    now = utcnow()
    table = cast(Table, DeviceImage.__table__)
    final: dict[tuple[int, str], Change] = {}
    first: dict[tuple[int, str], Change] = {}
    for c in changes:
        key = (c.device_id, c.message.image_id)
        final[key] = c
        first.setdefault(key, c)
    keys = sorted(final)
    created = [k for k in keys if not first[k].exists]
    kept = [k for k in keys if first[k].exists]
    inserts = [_row_values(final[k], now) for k in created]
    updates = [_row_values(final[k], now) | {"b": first[k].before.value} for k in kept]
    written = 0
    if inserts:
        make = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        written += session.execute(
            make(table)
            .values(
                device_id=bindparam("d"),
                image_id=bindparam("i"),
                status=bindparam("s"),
                failure_reason=bindparam("r"),
                created_at=bindparam("t"),
                updated_at=bindparam("t"),
            )
            .on_conflict_do_nothing(index_elements=["device_id", "image_id"]),
            inserts,
        ).rowcount  # type: ignore[attr-defined]
    if updates:
        written += session.execute(
            update(table)
            .where(
                table.c.device_id == bindparam("d"),
                table.c.image_id == bindparam("i"),
                table.c.status == bindparam("b"),
            )
            .values(
                status=bindparam("s"), failure_reason=bindparam("r"), updated_at=bindparam("t")
            ),
            updates,
        ).rowcount  # type: ignore[attr-defined]
    if written != len(keys):
        raise StateError(
            f"{len(keys) - written} of {len(keys)} device images changed while the batch "
            "was applied (another writer got there first): send the batch again"
        )
    session.execute(insert(Event), [_event_values(c, now) for c in changes])


def _row_values(c: Change, now: datetime) -> dict[str, Any]:
    reason = c.message.reason if c.after is ImageStatus.FAILED else None
    return {
        "d": c.device_id,
        "i": c.message.image_id,
        "s": c.after.value,
        "r": reason,
        "t": c.message.at or now,
    }


def _event_values(c: Change, now: datetime) -> dict[str, Any]:
    return {
        "at": c.message.at or now,
        "message_id": c.message.message_id,
        "kind": "device_image",
        "device_id": c.device_id,
        "image_id": c.message.image_id,
        "deployment_set_id": c.message.deployment,
        "from_status": c.before.value,
        "to_status": c.after.value,
        "detail": c.message.reason,
    }


@dataclass(frozen=True)
class SetNews:
    """Deployment sets that completed or failed because of a batch."""

    completed: list[DeploymentSet]
    failed: list[tuple[DeploymentSet, Change]]


def follow_up(session: Session, changes: Sequence[Change]) -> SetNews:
    """Mark devices that now have every image of their open sets; complete or fail sets."""
    real = [c for c in changes if c.after is not c.before]
    arrivals = [c for c in real if c.after is ImageStatus.PRESENT]
    failures = [c for c in real if c.after is ImageStatus.FAILED]
    device_ids = sorted({c.device_id for c in real})
    if not device_ids:
        return SetNews([], [])
    members = _open_memberships(session, device_ids)
    needed = _set_images(session, {s for s, _ in members})
    completed = _arrivals(session, arrivals, members, needed)
    failed = []
    for c in failures:
        for set_id, device_id in members:
            if device_id == c.device_id and c.message.image_id in needed.get(set_id, set()):
                dset = deployment_sets.get_deployment_set(session, set_id)
                deployment_sets.transition_set(
                    session, dset, SetEvent.IMAGE_FAILED, c.message.reason)
                failed.append((dset, c))
    return SetNews(completed, failed)


def _open_memberships(session: Session, device_ids: Sequence[int]) -> list[tuple[str, int]]:
    """(set id, device id) of open sets where the device has not yet got everything."""
    out: list[tuple[str, int]] = []
    open_states = [SetState.PENDING.value, SetState.FAILED.value]
    for chunk in _chunks(device_ids):
        rows = session.execute(
            select(DeploymentDevice.deployment_set_id, DeploymentDevice.device_id)
            .join(DeploymentSet, DeploymentSet.id == DeploymentDevice.deployment_set_id)
            .where(
                DeploymentDevice.device_id.in_(chunk),
                DeploymentDevice.arrived_at.is_(None),
                DeploymentSet.state.in_(open_states),
            )
        )
        out.extend((s, d) for s, d in rows)
    return out


def _set_images(session: Session, set_ids: set[str]) -> dict[str, set[str]]:
    needed: dict[str, set[str]] = defaultdict(set)
    if set_ids:
        rows = session.execute(
            select(DeploymentImage.deployment_set_id, Image.image_id)
            .join(Image, Image.id == DeploymentImage.image_id)
            .where(DeploymentImage.deployment_set_id.in_(set_ids))
        )
        for s, i in rows:
            needed[s].add(i)
    return needed


def _present(session: Session, device_ids: Sequence[int]) -> dict[int, set[str]]:
    have: dict[int, set[str]] = defaultdict(set)
    for chunk in _chunks(device_ids):
        rows = session.execute(
            select(DeviceImage.device_id, DeviceImage.image_id).where(
                DeviceImage.device_id.in_(chunk), DeviceImage.status == ImageStatus.PRESENT.value
            )
        )
        for d, i in rows:
            have[d].add(i)
    return have


def _arrivals(
    session: Session,
    arrivals: Sequence[Change],
    members: Sequence[tuple[str, int]],
    needed: Mapping[str, set[str]],
) -> list[DeploymentSet]:
    """Set arrived_at where a device now has all of a set's images; return completed sets."""
    arrived_devices = {c.device_id for c in arrivals}
    candidates = [(s, d) for s, d in members if d in arrived_devices]
    if not candidates:
        return []
    have = _present(session, sorted({d for _, d in candidates}))
    done = [(s, d) for s, d in candidates if needed.get(s, set()) <= have[d]]
    if not done:
        return []
    table = cast(Table, DeploymentDevice.__table__)
    session.execute(
        update(table)
        .where(table.c.deployment_set_id == bindparam("s"), table.c.device_id == bindparam("d"))
        .values(arrived_at=utcnow()),
        [{"s": s, "d": d} for s, d in done],
    )
    completed = []
    for set_id in sorted({s for s, _ in done}):
        # one waiting device is enough to know: counting them all costs a scan of the
        # set's open members (100,000 in a big deployment) on every status batch
        waiting = session.scalar(
            select(DeploymentDevice.device_id)
            .where(
                DeploymentDevice.deployment_set_id == set_id, DeploymentDevice.arrived_at.is_(None)
            )
            .limit(1)
        )
        if waiting is None:
            dset = deployment_sets.get_deployment_set(session, set_id)
            deployment_sets.transition_set(session, dset, SetEvent.ALL_PRESENT)
            completed.append(dset)
    return completed
