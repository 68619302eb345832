"""The outbox dispatcher: deliver queued webhooks and emails, at least once, with backoff.

A :class:`Dispatcher` claims due :class:`~deltaport.fleet.models.Delivery` rows by a
compare-and-set on ``claim`` (with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two
hubs skip each other's rows instead of waiting), delivers each outside any transaction,
then records the outcome only if it still holds the claim. A failure is retried after
``base_delay * 2**attempts`` (capped at ``max_delay``) until the delivery is older than
``max_age``; then it is ``gave_up``. A claim older than ``lease`` is taken again, so a
hub that dies mid-delivery loses nothing (the receiver may see the event twice and
deduplicates by ``X-Deltaport-Event-Id``).

Webhooks are POSTed as JSON (schema ``deltaport.event/1``, docs/events.md) with
``X-Deltaport-Signature: sha256=<hex HMAC-SHA256 of the body under the endpoint secret>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from deltaport.errors import DeltaportError, TransferError, UsageError
from deltaport.fleet.models import Delivery, NotifyEvent, utcnow
from deltaport.notify.config import WebhookEndpoint
from deltaport.notify.email import Email, Notifier
from deltaport.notify.events import Channel, DeliveryState, event_body

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Deltaport-Signature"
EVENT_ID_HEADER = "X-Deltaport-Event-Id"
ERROR_MAX = 500  # characters of last_error kept


@dataclass(frozen=True)
class OutboxSettings:
    """How the dispatcher retries and how long it waits."""

    base_delay: float = 5.0  # seconds before the first retry
    max_delay: float = 900.0  # cap of the exponential backoff
    max_age: float = 86400.0  # a delivery older than this is given up
    lease: float = 120.0  # a claim older than this is taken again
    batch: int = 20  # deliveries claimed at once
    timeout: float = 10.0  # per HTTP request (connect, read, write)
    max_response_bytes: int = 64 * 1024  # of a receiver's answer read (then dropped)
    poll: float = 2.0  # seconds between polls when idle (the background thread)


def sign(secret: str, body: bytes) -> str:
    """The X-Deltaport-Signature value for BODY: ``sha256=<hex hmac>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body_bytes(event: NotifyEvent) -> bytes:
    """The exact bytes POSTed for EVENT (the same on every attempt)."""
    return json.dumps(event_body(event), sort_keys=True, separators=(",", ":")).encode()


def backoff(settings: OutboxSettings, attempts: int) -> timedelta:
    """Delay before the next try after ATTEMPTS failed attempts (exponential, capped)."""
    exp = min(attempts - 1, 30)
    return timedelta(seconds=min(settings.base_delay * (2 ** max(exp, 0)), settings.max_delay))


class Dispatcher:
    """Claims due deliveries from ENGINE and makes them; one instance per hub process."""

    def __init__(
        self,
        engine: Engine,
        endpoints: Sequence[WebhookEndpoint],
        notifier: Notifier | None,
        settings: OutboxSettings | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.engine = engine
        self.endpoints: Mapping[str, WebhookEndpoint] = {e.name: e for e in endpoints}
        self.notifier = notifier
        self.settings = settings or OutboxSettings()
        self.client = client or httpx.Client(timeout=self.settings.timeout)
        self.token = "dsp-" + secrets.token_hex(8)

    def run_once(self, now: datetime | None = None) -> int:
        """Claim and make every due delivery (one batch); return how many were attempted."""
        claimed = self.claim(now or utcnow())
        for delivery_id in claimed:
            self._attempt(delivery_id)
        return len(claimed)

    def claim(self, now: datetime) -> list[int]:
        """Claim up to ``batch`` due rows for this dispatcher; their ids."""
        until = now + timedelta(seconds=self.settings.lease)
        with Session(self.engine) as session, session.begin():
            query = (
                select(Delivery.id, Delivery.claim)
                .where(Delivery.state == DeliveryState.PENDING.value, Delivery.next_at <= now)
                .where(or_(Delivery.claim.is_(None), Delivery.claimed_until < now))
                .order_by(Delivery.next_at, Delivery.id)
                .limit(self.settings.batch)
            )
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = session.execute(query).all()
            won: list[int] = []
            for delivery_id, old_claim in rows:
                cas = update(Delivery).where(Delivery.id == delivery_id)
                cas = cas.where(
                    Delivery.claim.is_(None) if old_claim is None else Delivery.claim == old_claim
                )
                result = session.execute(cas.values(claim=self._claim_token(), claimed_until=until))
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    won.append(delivery_id)
            return won

    def _claim_token(self) -> str:
        return self.token

    def _attempt(self, delivery_id: int) -> None:
        with Session(self.engine) as session:
            delivery = session.get(Delivery, delivery_id)
            event = session.get(NotifyEvent, delivery.event_id) if delivery else None
            if delivery is None or event is None or delivery.claim != self.token:
                return
            session.expunge_all()
        try:
            self._deliver(delivery, event)
        except DeltaportError as exc:
            self._finish(delivery, error=str(exc), permanent=not exc.transient)
        else:
            self._finish(delivery, error=None, permanent=False)

    def _deliver(self, delivery: Delivery, event: NotifyEvent) -> None:
        if delivery.channel == Channel.EMAIL.value:
            self._send_email(delivery)
        elif delivery.channel == Channel.WEBHOOK.value:
            self._post(delivery, event)
        else:
            raise UsageError(f"delivery {delivery.id}: unknown channel {delivery.channel!r}")

    def _send_email(self, delivery: Delivery) -> None:
        if self.notifier is None:
            raise TransferError("no SMTP server configured (fleet smtp settings)")
        p = delivery.payload or {}
        self.notifier.send(Email(to=str(p["to"]), subject=str(p["subject"]), body=str(p["body"])))

    def _post(self, delivery: Delivery, event: NotifyEvent) -> None:
        endpoint = self.endpoints.get(delivery.target)
        if endpoint is None:
            raise TransferError(f"webhook endpoint {delivery.target!r} is not configured")
        body = body_bytes(event)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(endpoint.secret, body),
            EVENT_ID_HEADER: event.id,
            "User-Agent": "deltaport-hub",
        }
        try:
            with self.client.stream("POST", endpoint.url, content=body, headers=headers) as resp:
                self._drain(resp)
        except httpx.HTTPError as exc:
            raise TransferError(f"webhook {endpoint.name}: {exc}") from exc
        if not 200 <= resp.status_code < 300:
            raise TransferError(f"webhook {endpoint.name}: HTTP {resp.status_code}")

    def _drain(self, resp: httpx.Response) -> None:
        seen = 0
        for chunk in resp.iter_bytes():
            seen += len(chunk)
            if seen > self.settings.max_response_bytes:
                break  # the answer is not used; do not read an unbounded one

    def _finish(self, delivery: Delivery, *, error: str | None, permanent: bool) -> None:
        now = utcnow()
        attempts = delivery.attempts + 1
        values: dict[str, object] = {"attempts": attempts, "claim": None, "claimed_until": None}
        if error is None:
            values |= {"state": DeliveryState.DELIVERED.value, "delivered_at": now}
        else:
            too_old = now - delivery.created_at > timedelta(seconds=self.settings.max_age)
            values["last_error"] = error[:ERROR_MAX]
            if permanent or too_old:
                values["state"] = DeliveryState.GAVE_UP.value
            else:
                values["next_at"] = now + backoff(self.settings, attempts)
            log.warning("delivery %s (%s) failed: %s", delivery.id, delivery.target, error)
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(Delivery)
                .where(Delivery.id == delivery.id, Delivery.claim == self.token)
                .values(**values)
            )


def replay(session: Session, event_id: str) -> int:
    """Queue every delivery of EVENT_ID again (due now); return how many.

    Raises:
        UsageError: no delivery has that event id.
    """
    result = session.execute(
        update(Delivery)
        .where(Delivery.event_id == event_id)
        .values(
            state=DeliveryState.PENDING.value,
            next_at=utcnow(),
            claim=None,
            claimed_until=None,
            created_at=utcnow(),
        )
    )
    count = int(result.rowcount)  # type: ignore[attr-defined]
    if count == 0:
        raise UsageError(f"no deliveries for event {event_id!r}")
    return count


def deliveries_doc(session: Session, limit: int = 100) -> list[dict[str, object]]:
    """The newest LIMIT deliveries (``deltaport status webhooks --json``), newest first."""
    rows = session.execute(
        select(Delivery, NotifyEvent.kind)
        .outerjoin(NotifyEvent, NotifyEvent.id == Delivery.event_id)
        .order_by(Delivery.id.desc())
        .limit(limit)
    ).all()
    return [
        {
            "event": d.event_id,
            "kind": kind,
            "channel": d.channel,
            "target": d.target,
            "state": d.state,
            "attempts": d.attempts,
            "next_at": d.next_at.isoformat(),
            "last_error": d.last_error,
        }
        for d, kind in rows
    ]
