"""The outbox: webhooks to a real HTTP receiver that fails twice first; email retried
after a real SMTP server comes back; two dispatchers on PostgreSQL never overlap."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from email import message_from_bytes
from email.message import Message
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from deltaport.config import SmtpSettings
from deltaport.fleet.models import Delivery
from deltaport.notify.config import WebhookEndpoint
from deltaport.notify.email import Email, SmtpNotifier
from deltaport.notify.events import DeliveryState, EventKind, record
from deltaport.notify.outbox import Dispatcher, OutboxSettings, replay
from tests.fixtures.services import free_port
from tests.notify.conftest import Receiver

SECRET = "s3cret-s3cret-s3cret"
FAST = OutboxSettings(base_delay=0.0, max_delay=0.0, timeout=5.0)


def _endpoint(receiver: Receiver) -> WebhookEndpoint:
    return WebhookEndpoint(name="ops", url=receiver.url, secret=SECRET)


def _deliveries(engine: Engine) -> list[Delivery]:
    with Session(engine) as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


def test_webhook_fails_twice_then_delivered_once_signed(engine: Engine, receiver: Receiver) -> None:
    receiver.fail_first = 2
    endpoint = _endpoint(receiver)
    with Session(engine) as session, session.begin():
        event_id = record(
            session, EventKind.DEPLOYMENT_COMPLETE, "dep-1", {"images": 3}, endpoints=[endpoint]
        )
    dispatcher = Dispatcher(engine, [endpoint], None, FAST)
    for _ in range(5):
        dispatcher.run_once()
    assert [h.status for h in receiver.hits] == [500, 500, 204]
    assert {h.headers["x-deltaport-event-id"] for h in receiver.hits} == {event_id}
    assert len({h.body for h in receiver.hits}) == 1  # the same bytes on every attempt
    hit = receiver.accepted()[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), hit.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hit.headers["x-deltaport-signature"], expected)
    body = json.loads(hit.body)
    assert body["id"] == event_id and body["kind"] == "deployment.complete"
    assert body["schema"] == "deltaport.event/1" and body["data"] == {"images": 3}
    (row,) = _deliveries(engine)
    assert row.state == DeliveryState.DELIVERED and row.attempts == 3 and row.claim is None
    assert row.last_error is not None and "HTTP 500" in row.last_error


def test_backoff_waits_and_replay_requeues(engine: Engine, receiver: Receiver) -> None:
    receiver.fail_first = 1
    endpoint = _endpoint(receiver)
    slow = OutboxSettings(base_delay=3600.0, max_delay=7200.0)
    with Session(engine) as session, session.begin():
        event_id = record(session, EventKind.DEPLOYMENT_FAILED, "dep-2", {}, endpoints=[endpoint])
    dispatcher = Dispatcher(engine, [endpoint], None, slow)
    assert dispatcher.run_once() == 1
    assert dispatcher.run_once() == 0  # backing off for an hour
    with Session(engine) as session, session.begin():
        assert replay(session, event_id) == 1
    assert dispatcher.run_once() == 1
    assert [h.status for h in receiver.hits] == [500, 204]
    assert _deliveries(engine)[0].state == DeliveryState.DELIVERED


def test_gives_up_after_max_age(engine: Engine, receiver: Receiver) -> None:
    receiver.fail_first = 10
    endpoint = _endpoint(receiver)
    with Session(engine) as session, session.begin():
        record(session, EventKind.DEPLOYMENT_CREATED, "dep-3", {}, endpoints=[endpoint])
    Dispatcher(engine, [endpoint], None, OutboxSettings(base_delay=0, max_age=0)).run_once()
    (row,) = _deliveries(engine)
    assert row.state == DeliveryState.GAVE_UP and row.attempts == 1


class _Collect:
    def __init__(self) -> None:
        self.received: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(message_from_bytes(envelope.original_content))
        return "250 OK"


def test_email_retried_after_smtp_server_comes_back(sqlite_engine: Engine) -> None:
    from aiosmtpd.controller import Controller

    port = free_port()
    notifier = SmtpNotifier(SmtpSettings(host="127.0.0.1", port=port, timeout=5.0))
    email = Email(to="ops@example.org", subject="dep-4 complete", body="all 3 devices")
    with Session(sqlite_engine) as session, session.begin():
        record(session, EventKind.DEPLOYMENT_COMPLETE, "dep-4", {}, emails=[email, email])
    dispatcher = Dispatcher(sqlite_engine, [], notifier, FAST)
    dispatcher.run_once()  # nothing listens: refused, kept for a retry
    (row,) = _deliveries(sqlite_engine)
    assert row.state == DeliveryState.PENDING and row.attempts == 1
    assert row.last_error is not None and "cannot send email" in row.last_error
    handler = _Collect()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        dispatcher.run_once()
    finally:
        controller.stop()
    (msg,) = handler.received
    assert msg["To"] == "ops@example.org" and msg["Subject"] == "dep-4 complete"
    (row,) = _deliveries(sqlite_engine)
    assert row.state == DeliveryState.DELIVERED and row.attempts == 2


def test_two_dispatchers_never_deliver_one_attempt_twice(postgres: Any, receiver: Receiver) -> None:
    from deltaport.fleet.db import init_db

    engine = init_db(postgres.url(postgres.new_database()))
    receiver.delay = 0.01
    endpoint = _endpoint(receiver)
    with Session(engine) as session, session.begin():
        ids = {
            record(session, EventKind.IMAGE_DELIVERED, f"dep-{i}", {}, endpoints=[endpoint])
            for i in range(40)
        }
    settings = OutboxSettings(batch=5, timeout=5.0)
    dispatchers = [Dispatcher(engine, [endpoint], None, settings) for _ in range(2)]
    done = [0, 0]

    def drain(n: int) -> None:
        while (count := dispatchers[n].run_once()) > 0:
            done[n] += count

    threads = [threading.Thread(target=drain, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    engine.dispose()
    seen = [h.headers["x-deltaport-event-id"] for h in receiver.hits]
    assert sorted(seen) == sorted(ids)  # each event exactly once
    assert receiver.overlaps == 0
    assert sum(done) == 40 and min(done) > 0  # both took part
