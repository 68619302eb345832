"""The hub's outbox: fleet events bridged to webhooks once, failed emails queued, config."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from deltaport.errors import FormatError, TransferError
from deltaport.fleet import device_images
from deltaport.fleet.models import Delivery, NotifyEvent
from deltaport.notify import bridge
from deltaport.notify.config import WebhookEndpoint, load_webhooks
from deltaport.notify.email import Email
from deltaport.notify.hub import HubOutbox
from deltaport.notify.outbox import OutboxSettings
from tests.notify.conftest import Receiver

SECRET = "s3cret-s3cret-s3cret"


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(
        f'[[webhooks]]\nname = "ops"\nurl = "{url}"\nsecret = "{SECRET}"\n'
        'kinds = ["deployment.complete", "deployment.failed"]\n'
    )
    return path


def test_webhooks_config(tmp_path: Path) -> None:
    (ops,) = load_webhooks(_config(tmp_path, "http://127.0.0.1:1/h"))
    assert ops == WebhookEndpoint(
        "ops", "http://127.0.0.1:1/h", SECRET, ("deployment.complete", "deployment.failed")
    )
    assert load_webhooks(tmp_path / "absent.toml") == ()
    bad = tmp_path / "bad.toml"
    bad.write_text('[[webhooks]]\nname = "x"\nurl = "ftp://x"\nsecret = "short"\n')
    with pytest.raises(FormatError):
        load_webhooks(bad)


def test_fleet_events_bridged_once_to_webhooks(
    engine: Engine, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bridge, "SETTLE", 0.0)
    with Session(engine) as session, session.begin():
        device_images.log_event(session, kind="deployment_set", to_status="complete")  # history
    outbox = HubOutbox(
        engine,
        _config(tmp_path, receiver.url),
        None,
        smtp=False,
        settings=OutboxSettings(base_delay=0),
    )
    outbox.run_once()
    assert receiver.hits == []  # history before the first pass is not sent
    with Session(engine) as session, session.begin():
        device_images.log_event(session, kind="deployment_set", to_status="complete")
        device_images.log_event(session, kind="deployment_set", to_status="pending")  # not wanted
        device_images.log_event(session, kind="deployment_set", to_status="failed")
    second = HubOutbox(engine, _config(tmp_path, receiver.url), None, smtp=False)
    second.run_once()
    outbox.run_once()  # bridges the same rows: inserts nothing more
    kinds = sorted(h.body.decode().split('"kind":"')[1].split('"')[0] for h in receiver.hits)
    assert kinds == ["deployment.complete", "deployment.failed"]
    with Session(engine) as session:
        assert len(session.scalars(select(NotifyEvent)).all()) == 3
        assert len(session.scalars(select(Delivery)).all()) == 2


class _Down:
    def __init__(self) -> None:
        self.up = False
        self.sent: list[Email] = []

    def send(self, email: Email) -> None:
        if not self.up:
            raise TransferError("smtp down")
        self.sent.append(email)


def test_failed_email_queued_then_sent(sqlite_engine: Engine) -> None:
    smtp = _Down()
    outbox = HubOutbox(sqlite_engine, None, smtp, smtp=True, settings=OutboxSettings(base_delay=0))
    assert outbox.notifier is not None and outbox.enabled
    outbox.notifier.send(Email("ops@example.org", "s", "b"))  # does not raise: queued
    smtp.up = True
    assert outbox.run_once() == 1
    assert [e.to for e in smtp.sent] == ["ops@example.org"]


def test_status_webhooks_lists_and_replays(tmp_path: Path, receiver: Receiver) -> None:
    import json
    import subprocess
    import sys

    from deltaport.fleet.db import init_db
    from deltaport.notify.events import EventKind, record
    from deltaport.notify.outbox import Dispatcher

    db = f"sqlite:///{tmp_path / 'fleet.db'}"
    engine = init_db(db)
    endpoint = WebhookEndpoint("ops", receiver.url, SECRET)
    receiver.fail_first = 1
    with Session(engine) as session, session.begin():
        event_id = record(session, EventKind.DEPLOYMENT_FAILED, "dep-9", {}, endpoints=[endpoint])
    Dispatcher(engine, [endpoint], None, OutboxSettings(base_delay=3600)).run_once()

    def cli(*args: str) -> str:
        base = [sys.executable, "-m", "deltaport.cli.main", "--db", db, "status", "webhooks"]
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    (row,) = json.loads(cli("--json"))
    assert row["event"] == event_id and row["state"] == "pending" and row["attempts"] == 1
    assert "HTTP 500" in row["last_error"]
    assert "queued 1" in cli("--replay", event_id)
    assert Dispatcher(engine, [endpoint], None).run_once() == 1  # due again at once
    assert [h.status for h in receiver.hits] == [500, 204]
    engine.dispose()
