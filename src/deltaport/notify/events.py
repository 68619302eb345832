"""Events told to other systems: what they are, and how one is recorded (docs/events.md).

:func:`record` adds one :class:`~deltaport.fleet.models.NotifyEvent` and its
:class:`~deltaport.fleet.models.Delivery` rows (one per webhook endpoint that wants the
kind, one per email) to the caller's session, so the event is committed with the state
change that causes it, or not at all. ``deltaport.notify.outbox`` delivers the rows.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from deltaport.fleet.models import Delivery, NotifyEvent, utcnow
from deltaport.notify.config import WebhookEndpoint
from deltaport.notify.email import Email

SCHEMA = "deltaport.event/1"


class EventKind(StrEnum):
    """Every kind of event (docs/events.md §2). The value is what receivers see."""

    DEPLOYMENT_CREATED = "deployment.created"
    IMAGE_DELIVERED = "deployment.image_delivered"
    IMAGE_FAILED = "deployment.image_failed"
    IMAGE_RETRY_SCHEDULED = "deployment.image_retry_scheduled"
    IMAGE_NOT_RETRIED = "deployment.image_not_retried"  # failed for good (permanent, exhausted)
    DEPLOYMENT_COMPLETE = "deployment.complete"
    DEPLOYMENT_FAILED = "deployment.failed"
    DEPLOYMENT_ACTIVATION_ISSUED = "deployment.activation_issued"
    DEVICE_ACTIVATING = "deployment.device_activating"
    DEVICE_ACTIVE = "deployment.device_active"
    DEVICE_ROLLED_BACK = "deployment.device_rolled_back"
    DEVICE_ACTIVATION_FAILED = "deployment.device_activation_failed"
    DEVICE_ACTIVATION_REFUSED = "deployment.device_activation_refused"
    EMAIL_QUEUED = "email.queued"  # an email that failed once (never sent to webhooks)
    ROLLOUT_CREATED = "rollout.created"
    ROLLOUT_WAVE_STARTED = "rollout.wave_started"
    ROLLOUT_WAVE_COMPLETE = "rollout.wave_complete"
    ROLLOUT_WAITING_APPROVAL = "rollout.waiting_approval"
    ROLLOUT_APPROVED = "rollout.approved"
    ROLLOUT_PAUSED = "rollout.paused"
    ROLLOUT_RESUMED = "rollout.resumed"
    ROLLOUT_CANCELLED = "rollout.cancelled"
    ROLLOUT_COMPLETE = "rollout.complete"


class Channel(StrEnum):
    """How a delivery is made (``deliveries.channel``)."""

    WEBHOOK = "webhook"
    EMAIL = "email"


class DeliveryState(StrEnum):
    """Where a delivery is (``deliveries.state``); a claim is separate (claim column)."""

    PENDING = "pending"  # due at next_at (a retry after a failure, too)
    DELIVERED = "delivered"
    GAVE_UP = "gave_up"  # older than the max age, or a permanent refusal


def new_event_id() -> str:
    """A fresh, unique event id (``evt-`` and 24 hex digits)."""
    return "evt-" + secrets.token_hex(12)


def publish(
    session: Session,
    kind: EventKind,
    subject: str,
    data: dict[str, Any] | None = None,
    *,
    at: datetime | None = None,
) -> str:
    """Add one event to SESSION (committed with the caller's transaction); return its id.

    SUBJECT names what the event is about (a deployment id, a rollout id); DATA is
    kind-specific JSON (docs/events.md §2).
    """
    event_id = new_event_id()
    session.add(
        NotifyEvent(
            id=event_id,
            at=at or utcnow(),
            kind=EventKind(kind).value,
            subject=subject[:300],
            data=dict(data or {}),
        )
    )
    return event_id


def event_body(event: NotifyEvent) -> dict[str, Any]:
    """The JSON document a receiver gets for EVENT (schema ``deltaport.event/1``)."""
    return {
        "schema": SCHEMA,
        "id": event.id,
        "kind": event.kind,
        "at": event.at.isoformat(),
        "subject": event.subject,
        "data": event.data,
    }


def record(
    session: Session,
    kind: EventKind,
    subject: str,
    data: dict[str, Any] | None = None,
    *,
    endpoints: Sequence[WebhookEndpoint] = (),
    emails: Sequence[Email] = (),
    at: datetime | None = None,
) -> str:
    """Publish one event and queue its deliveries in SESSION's transaction; return its id.

    One webhook delivery per endpoint in ENDPOINTS that wants KIND, one email delivery
    per message in EMAILS (its text is kept in the row, so it survives a hub restart).
    """
    when = at or utcnow()
    event_id = publish(session, kind, subject, data, at=when)
    session.flush()  # the event row first: receivers may look it up by id
    for endpoint in endpoints:
        if endpoint.wants(EventKind(kind).value):
            session.add(delivery_row(event_id, Channel.WEBHOOK, endpoint.name, None, when))
    seen: set[str] = set()
    for email in emails:
        if email.to in seen:  # one row per (event, address): uq_deliveries_event_target
            continue
        seen.add(email.to)
        payload = {"to": email.to, "subject": email.subject, "body": email.body}
        session.add(delivery_row(event_id, Channel.EMAIL, email.to, payload, when))
    return event_id


def delivery_row(
    event_id: str, channel: Channel, target: str, payload: dict[str, Any] | None, at: datetime
) -> Delivery:
    """A pending delivery row of EVENT_ID to TARGET over CHANNEL, due at AT."""
    return Delivery(
        event_id=event_id,
        channel=channel.value,
        target=target[:320],
        payload=payload,
        state=DeliveryState.PENDING.value,
        attempts=0,
        next_at=at,
        created_at=at,
    )
