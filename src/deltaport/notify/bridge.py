"""Deployment events for webhooks, taken from the fleet event log (``events`` table).

Every deployment state change is already appended to ``events`` in the transaction
that makes it (``fleet.device_images``, ``fleet.deployment_sets``, ``fleet.activation``).
:func:`pump` turns new rows into :class:`~deltaport.fleet.models.NotifyEvent` rows with a
deterministic id (``evt-e`` + the zero-padded ``events.id``), so two hubs pumping at once
insert each event once (the primary key decides) and the newest bridged id is the cursor.

A hub that has never bridged anything starts after the newest event (history is not
sent). Rows are taken only once they are ``SETTLE`` seconds old, so a PostgreSQL
transaction that committed a lower id late is still seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from deltaport.fleet.models import Device, Event, NotifyEvent, utcnow
from deltaport.notify.config import WebhookEndpoint
from deltaport.notify.events import Channel, EventKind, delivery_row

PREFIX = "evt-e"
SETTLE = 2.0  # seconds
BATCH = 200

_KINDS: dict[tuple[str, str], EventKind] = {
    ("deployment_set", "pending"): EventKind.DEPLOYMENT_CREATED,
    ("deployment_set", "complete"): EventKind.DEPLOYMENT_COMPLETE,
    ("deployment_set", "failed"): EventKind.DEPLOYMENT_FAILED,
    ("deployment_set", "active"): EventKind.DEPLOYMENT_ACTIVATION_ISSUED,
    ("device_image", "present"): EventKind.IMAGE_DELIVERED,
    ("device_image", "failed"): EventKind.IMAGE_FAILED,
    ("device_deployment", "activating"): EventKind.DEVICE_ACTIVATING,
    ("device_deployment", "active"): EventKind.DEVICE_ACTIVE,
    ("device_deployment", "rolled_back"): EventKind.DEVICE_ROLLED_BACK,
    ("device_deployment", "failed"): EventKind.DEVICE_ACTIVATION_FAILED,
    ("device_deployment", "refused"): EventKind.DEVICE_ACTIVATION_REFUSED,
    ("delivery_retry", "scheduled"): EventKind.IMAGE_RETRY_SCHEDULED,  # pipelines.retry
    ("delivery_retry", "permanent"): EventKind.IMAGE_NOT_RETRIED,
    ("delivery_retry", "exhausted"): EventKind.IMAGE_NOT_RETRIED,
}


def bridged_id(source_id: int) -> str:
    """The NotifyEvent id of fleet event SOURCE_ID (sorts like the number)."""
    return f"{PREFIX}{source_id:020d}"


ROLLOUT_PREFIX = "rollout."  # a rollout's rows carry their notify kind (pipelines.rollouts)
_ROLLOUT_KINDS = {k.value: k for k in EventKind if k.value.startswith(ROLLOUT_PREFIX)}


def kind_of(row: Event) -> EventKind | None:
    """The notify kind of a fleet event row, or None if it is not told."""
    if row.kind.startswith(ROLLOUT_PREFIX):
        return _ROLLOUT_KINDS.get(row.kind)
    return _KINDS.get((row.kind, row.to_status or ""))


def _cursor(session: Session) -> int:
    newest = session.scalar(
        select(func.max(NotifyEvent.id)).where(NotifyEvent.id.like(PREFIX + "%"))
    )
    if newest is not None:
        return int(newest[len(PREFIX) :])
    return int(session.scalar(select(func.max(Event.id))) or 0)


def pump(engine: Engine, endpoints: Sequence[WebhookEndpoint], cursor: int | None) -> int:
    """Bridge fleet events after CURSOR (None: from the database) ; return the new cursor."""
    with Session(engine) as session:
        after = _cursor(session) if cursor is None else cursor
        settled = utcnow() - timedelta(seconds=SETTLE)
        rows = session.execute(
            select(Event, Device.name)
            .outerjoin(Device, Device.id == Event.device_id)
            .where(Event.id > after, Event.at <= settled)
            .order_by(Event.id)
            .limit(BATCH)
        ).all()
    for row, device in rows:
        kind = kind_of(row)
        if kind is not None:
            _insert(engine, row, device, kind, endpoints)
        after = row.id
    return after


def _insert(
    engine: Engine,
    row: Event,
    device: str | None,
    kind: EventKind,
    endpoints: Sequence[WebhookEndpoint],
) -> None:
    data: dict[str, Any] = {
        "deployment": row.deployment_set_id,
        "device": device,
        "image": row.image_id,
        "from": row.from_status,
        "to": row.to_status,
        "detail": row.detail,
    }
    subject = row.deployment_set_id or row.image_id or ""
    if kind.value.startswith(ROLLOUT_PREFIX) and row.detail and ": " in row.detail:
        data["rollout"], data["detail"] = row.detail.split(": ", 1)  # "<rollout id>: why"
        subject = data["rollout"]
    event_id, now = bridged_id(row.id), utcnow()
    try:
        with Session(engine) as session, session.begin():
            session.add(
                NotifyEvent(
                    id=event_id,
                    at=row.at,
                    kind=kind.value,
                    subject=subject[:300],
                    data={k: v for k, v in data.items() if v is not None},
                )
            )
            session.flush()
            for endpoint in endpoints:
                if endpoint.wants(kind.value):
                    session.add(delivery_row(event_id, Channel.WEBHOOK, endpoint.name, None, now))
    except IntegrityError:
        return  # another hub bridged it first
