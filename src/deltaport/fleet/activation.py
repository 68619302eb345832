"""Applying activation status messages (docs/device-runtime.md §3) to ``device_deployments``.

Like :mod:`deltaport.fleet.ingest` for image messages, in three steps: load what the
messages refer to in a few queries (:func:`load_snapshot`), decide each message in
order against that snapshot with the state table (:func:`decide`, pure), then write
the row changes and one event per accepted message (:func:`write`). The event's
``message_id`` (unique per device in ``events``) is what makes a message idempotent: a second
copy is a duplicate, whichever batch it comes in. The caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from deltaport.errors import StateError
from deltaport.fleet import device_images
from deltaport.fleet.documents import ActivationMessage
from deltaport.fleet.models import (
    DeploymentDevice,
    DeploymentSet,
    Device,
    DeviceDeployment,
    Event,
    utcnow,
)
from deltaport.fleet.states import (
    BAD_ACTIVATION_STATES,
    ActivationState,
    MessageOutcome,
    next_activation_state,
)

EVENT_KIND = "device_deployment"  # events.kind of an activation state change


@dataclass(frozen=True)
class ActivationVerdict:
    """What one activation message does."""

    message: ActivationMessage
    outcome: MessageOutcome
    state: ActivationState | None = None
    error: str | None = None
    before: ActivationState | None = None
    device_id: int | None = None
    contact: str | None = None  # the deployment's contact email

    @property
    def newly_bad(self) -> bool:
        """The device just reached rolled_back / failed / refused: mail the contact."""
        return (
            self.outcome is MessageOutcome.APPLIED
            and self.state in BAD_ACTIVATION_STATES
            and self.before is not self.state
        )


@dataclass
class Snapshot:
    """What a batch of activation messages refers to, as the database has it now."""

    seen: set[tuple[int, str]]  # (device id, message id) already applied
    devices: dict[str, int]  # name → id
    contacts: dict[str, str]  # deployment set id → contact email
    members: set[tuple[int, str]]  # (device id, set id) the set targets
    rows: dict[tuple[int, str], tuple[ActivationState, int]] = field(default_factory=dict)


def load_snapshot(session: Session, messages: Sequence[ActivationMessage]) -> Snapshot:
    """Read everything MESSAGES refer to (a status batch is at most a thousand messages)."""
    if not messages:
        return Snapshot(seen=set(), devices={}, contacts={}, members=set())
    ids = sorted({m.message_id for m in messages})
    names = sorted({m.device for m in messages})
    set_ids = sorted({m.deployment for m in messages})
    devices: dict[str, int] = {
        n: i
        for n, i in session.execute(select(Device.name, Device.id).where(Device.name.in_(names)))
    }
    seen = device_images.seen_messages(session, ids, sorted(set(devices.values())))
    contacts: dict[str, str] = {
        s: c
        for s, c in session.execute(
            select(DeploymentSet.id, DeploymentSet.contact_email).where(
                DeploymentSet.id.in_(set_ids)
            )
        )
    }
    device_ids = sorted(devices.values())
    members: set[tuple[int, str]] = set(
        session.execute(
            select(DeploymentDevice.device_id, DeploymentDevice.deployment_set_id).where(
                DeploymentDevice.device_id.in_(device_ids),
                DeploymentDevice.deployment_set_id.in_(set_ids),
            )
        ).tuples()
    )
    snap = Snapshot(seen=seen, devices=devices, contacts=contacts, members=members)
    for d, s, state, version in session.execute(
        select(
            DeviceDeployment.device_id,
            DeviceDeployment.deployment_set_id,
            DeviceDeployment.state,
            DeviceDeployment.version,
        ).where(
            DeviceDeployment.device_id.in_(device_ids),
            DeviceDeployment.deployment_set_id.in_(set_ids),
        )
    ):
        snap.rows[(d, s)] = (ActivationState(state), int(version))
    return snap


def decide(messages: Sequence[ActivationMessage], snap: Snapshot) -> list[ActivationVerdict]:
    """Run each message through the activation state table in order. Pure (updates SNAP)."""
    return [_decide_one(m, snap) for m in messages]


def _decide_one(msg: ActivationMessage, snap: Snapshot) -> ActivationVerdict:
    device_id = snap.devices.get(msg.device)
    if device_id is None:
        return _rejected(msg, f"unknown device {msg.device!r}")
    if (device_id, msg.message_id) in snap.seen:
        return ActivationVerdict(msg, MessageOutcome.DUPLICATE)
    contact = snap.contacts.get(msg.deployment)
    if contact is None:
        return _rejected(msg, f"unknown deployment {msg.deployment!r}")
    if (device_id, msg.deployment) not in snap.members:
        return _rejected(msg, f"deployment {msg.deployment} does not target {msg.device}")
    key = (device_id, msg.deployment)
    before, version = snap.rows.get(key, (ActivationState.DELIVERED, msg.version))
    try:
        after = next_activation_state(before, version, msg.outcome, msg.version)
    except StateError as exc:
        return _rejected(msg, f"{msg.device}: {exc}")
    snap.seen.add((device_id, msg.message_id))
    snap.rows[key] = (after, max(version, msg.version))
    changed = after is not before or msg.version > version
    return ActivationVerdict(
        msg,
        MessageOutcome.APPLIED if changed else MessageOutcome.UNCHANGED,
        state=after,
        before=before,
        device_id=device_id,
        contact=contact,
    )


def _rejected(msg: ActivationMessage, error: str) -> ActivationVerdict:
    return ActivationVerdict(msg, MessageOutcome.REJECTED, error=error)


def write(session: Session, verdicts: Sequence[ActivationVerdict]) -> None:
    """Store the accepted verdicts: the device × deployment rows, and one event each."""
    now = utcnow()
    for v in verdicts:
        if v.outcome not in (MessageOutcome.APPLIED, MessageOutcome.UNCHANGED):
            continue
        assert v.device_id is not None and v.state is not None and v.before is not None
        if v.outcome is MessageOutcome.APPLIED:
            _store_row(session, v, v.message.at or now)
        session.add(
            Event(
                at=v.message.at or now,
                message_id=v.message.message_id,
                kind=EVENT_KIND,
                device_id=v.device_id,
                deployment_set_id=v.message.deployment,
                from_status=v.before.value,
                to_status=v.state.value,
                detail=_event_detail(v.message),
            )
        )
    session.flush()


def _store_row(session: Session, v: ActivationVerdict, at: datetime) -> None:
    msg = v.message
    assert v.device_id is not None and v.state is not None
    row = session.get(DeviceDeployment, (v.device_id, msg.deployment))
    if row is None:
        row = DeviceDeployment(device_id=v.device_id, deployment_set_id=msg.deployment)
        session.add(row)
    row.version = msg.version if row.version is None else max(row.version, msg.version)
    row.state = v.state.value
    row.reason = msg.reason
    row.detail = msg.detail() if msg.module or msg.logs or msg.exit_code is not None else None
    row.updated_at = at
    session.flush()


def _event_detail(msg: ActivationMessage) -> str:
    text = f"v{msg.version} {msg.outcome.value}"
    return f"{text}: {msg.reason}" if msg.reason else text
