"""Every change of a rollout reaches other systems: a ``rollout.*`` row in the fleet event
log, bridged to a real webhook receiver, and the requester's email through the outbox
(queued while SMTP is down, sent when it is back). SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from deltaport.errors import TransferError
from deltaport.fleet.db import session_scope
from deltaport.fleet.models import Delivery, Event
from deltaport.notify import bridge
from deltaport.notify.email import Email
from deltaport.notify.hub import HubOutbox
from deltaport.notify.outbox import OutboxSettings
from deltaport.pipelines import rollouts
from deltaport.pipelines.events import handle_status_messages
from deltaport.rollout.plan import RolloutAction
from tests.fleet.test_pipelines import Fleet
from tests.notify.conftest import Receiver
from tests.rollout.test_rollouts_db import activation, deliver, start

SECRET = "s3cret-s3cret-s3cret"


class _Smtp:
    """An SMTP stand-in that refuses until ``up``."""

    def __init__(self) -> None:
        self.up = False
        self.sent: list[Email] = []

    def send(self, email: Email) -> None:
        if not self.up:
            raise TransferError("smtp down")
        self.sent.append(email)


def _kinds(fleet: Fleet) -> list[str]:
    with session_scope(fleet.engine) as s:
        return list(s.scalars(select(Event.kind).where(
            Event.kind.startswith(rollouts.EVENT_PREFIX)).order_by(Event.id)))


def _outbox(tmp_path: Path, url: str, smtp: _Smtp, fleet: Fleet) -> HubOutbox:
    config = tmp_path / "hub.toml"
    config.write_text(f'[[webhooks]]\nname = "ops"\nurl = "{url}"\nsecret = "{SECRET}"\n')
    return HubOutbox(fleet.engine, config, smtp, smtp=True,
                     settings=OutboxSettings(base_delay=0))


def test_a_paused_rollout_is_told_to_webhooks_and_mailed_to_the_requester(
    fleet: Fleet, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bridge, "SETTLE", 0.0)
    smtp = _Smtp()
    outbox = _outbox(tmp_path, receiver.url, smtp, fleet)
    outbox.run_once()  # the bridge starts after the newest event: history is not sent
    dep, rid = start(fleet)
    deliver(fleet, "a", "b", "c")
    result = handle_status_messages(
        fleet.engine, [activation(dep, "d", "rolled_back")],  # type: ignore[list-item]
        notifier=outbox.notifier, store=fleet.store, manifest_key=fleet.manifest_key)
    assert result.emails_sent >= 1  # queued by the outbox notifier, not lost
    assert _kinds(fleet) == ["rollout.created", "rollout.wave_started", "rollout.paused"]
    smtp.up = True
    while outbox.run_once():
        pass
    bodies = [b for b in (json.loads(h.body) for h in receiver.accepted())
              if b["kind"].startswith("rollout.")]
    assert any(b["kind"] == "deployment.device_rolled_back" for b in (
        json.loads(h.body) for h in receiver.accepted()))
    assert [b["kind"] for b in bodies] == ["rollout.created", "rollout.wave_started",
                                           "rollout.paused"]
    assert {b["subject"] for b in bodies} == {rid}
    paused = bodies[-1]["data"]
    assert paused["rollout"] == rid and paused["deployment"] == dep and paused["to"] == "paused"
    assert "wave 1 has 1 of 1 device(s) failed" in paused["detail"]
    mails = [m for m in smtp.sent if "paused" in m.subject]
    assert [m.to for m in mails] == ["alice@example.com"] and rid in mails[0].subject
    with session_scope(fleet.engine) as s:
        email_rows = s.scalars(select(Delivery).where(Delivery.channel == "email")).all()
        assert email_rows and all(r.state == "delivered" for r in email_rows)


def test_every_step_of_a_completed_and_a_cancelled_rollout_is_an_event(fleet: Fleet) -> None:
    dep, rid = start(fleet, approve_each=True)
    deliver(fleet, "a", "b", "c")
    handle_status_messages(fleet.engine, [activation(dep, "d", "active")],  # type: ignore[list-item]
                           store=fleet.store, manifest_key=fleet.manifest_key)
    act = rollouts.Activator(fleet.store, fleet.manifest_key)
    with session_scope(fleet.engine) as s:
        rollouts.act(s, rid, RolloutAction.APPROVE, act)
    handle_status_messages(
        fleet.engine, [activation(dep, x, "active") for x in "abc"],  # type: ignore[misc]
        store=fleet.store, manifest_key=fleet.manifest_key)
    assert _kinds(fleet) == [
        "rollout.created", "rollout.wave_started", "rollout.wave_complete",
        "rollout.waiting_approval", "rollout.approved", "rollout.wave_started",
        "rollout.wave_complete", "rollout.complete",
    ]
    with session_scope(fleet.engine) as s:
        rows = s.scalars(select(Event).where(Event.kind.startswith("rollout."))).all()
        assert all(r.detail and r.detail.startswith(f"{rid}: ") for r in rows)
        assert all(bridge.kind_of(r) is not None for r in rows)


def test_a_cancelled_rollout_is_an_event(fleet: Fleet) -> None:
    _, rid = start(fleet)
    with session_scope(fleet.engine) as s:
        rollouts.act(s, rid, RolloutAction.CANCEL,
                     rollouts.Activator(fleet.store, fleet.manifest_key))
    assert _kinds(fleet)[-1] == "rollout.cancelled"


def test_each_retry_and_the_final_failure_reach_the_webhook(
    fleet: Fleet, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Webhooks hear every attempt (each failure, each scheduled retry) and the end."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from deltaport.fleet.documents import StatusMessage
    from deltaport.pipelines import retry
    from deltaport.pipelines.retry_policy import RetryPolicy

    monkeypatch.setattr(bridge, "SETTLE", 0.0)
    outbox = _outbox(tmp_path, receiver.url, _Smtp(), fleet)
    outbox.run_once()  # history is not sent
    dep = fleet.deploy(("a",)).deployment_id
    with session_scope(fleet.engine) as s:
        retry.set_retries(s, dep, 1)
    policy = RetryPolicy(retries=3, base=10.0, cap=20.0)

    def fail(deployment: str) -> None:
        msg = StatusMessage(str(uuid.uuid4()), "a", fleet.image_id("reg.io/app:2"), "failed",
                            reason="missing source layers: sha256:x", deployment=deployment)
        handle_status_messages(fleet.engine, [msg], retry_policy=policy)

    fail(dep)
    retrier = retry.Retrier(fleet.ranker, fleet.builder, fleet.store, fleet.work / "r", policy)
    [child] = retrier.run_once(fleet.engine, datetime.now(UTC) + timedelta(hours=1))
    fail(child)
    while outbox.run_once():
        pass
    bodies = sorted((json.loads(h.body) for h in receiver.accepted()), key=lambda b: b["id"])
    told = [(b["kind"], b["data"].get("detail", "")) for b in bodies
            if b["kind"].startswith("deployment.image_")]  # in the order they happened
    assert [k for k, _ in told] == [
        "deployment.image_failed", "deployment.image_retry_scheduled",
        "deployment.image_failed", "deployment.image_not_retried"]
    assert told[1][1] == "retry 1 of 1 in 10 s"
    assert told[3][1] == "not retried: 1 of 1 retries made"
