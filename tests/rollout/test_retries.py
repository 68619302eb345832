"""Automatic retries of failed deliveries (deltaport.pipelines.retry): the pure rules, and
retries on SQLite and PostgreSQL through the status-message path an agent uses.

Device a has app:1 and web:1 and is sent app:2 and web:2; its failures arrive as the
``failed`` status messages the agent sends (the reason as the agent words it).
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from deltaport.config import SmtpSettings
from deltaport.errors import FormatError, UsageError
from deltaport.fleet.db import session_scope
from deltaport.fleet.documents import StatusMessage
from deltaport.fleet.models import BundleDevice, DeliveryRetry, DeploymentSet, DesiredManifest
from deltaport.notify.email import SmtpNotifier
from deltaport.pipelines import retry
from deltaport.pipelines.events import handle_status_messages
from deltaport.pipelines.retry_policy import (
    FailureKind,
    RetryPolicy,
    RetryState,
    backoff,
    check_retries,
    classify,
    decide,
)
from tests.fleet.conftest import SmtpServer
from tests.fleet.test_pipelines import Fleet

POLICY = RetryPolicy(retries=3, base=10.0, cap=25.0)
LATER = timedelta(hours=2)


@pytest.mark.parametrize(("reason", "kind"), [
    ("missing source layers: sha256:ab", FailureKind.RETRYABLE),
    ("IntegrityError: sha256 of the download is sha256:00, expected sha256:11",
     FailureKind.RETRYABLE),
    ("TruncatedError: the bundle ends inside its payload", FailureKind.RETRYABLE),
    ("bundle for app (release 3) expired at 2026-12-01T00:00:00Z", FailureKind.RETRYABLE),
    (None, FailureKind.RETRYABLE),
    ("deferred: not enough free disk on the device: need 3 GB", FailureKind.PERMANENT),
    ("SignatureError: the index signature does not verify", FailureKind.PERMANENT),
    ("SignatureError: signer ed25519:ab is untrusted", FailureKind.PERMANENT),
    ("bundle content: no target image", FailureKind.PERMANENT),
    ("FormatError: not a deltaport bundle", FailureKind.PERMANENT),
    ("the hub offered sha256:1, the bundle rebuilds sha256:2", FailureKind.PERMANENT),
    ("bundle is for edge-2, not for device 'edge-1'", FailureKind.PERMANENT),
    ("replay refused: the bundle is release 1 of app", FailureKind.PERMANENT),
])
def test_failures_that_cannot_improve_are_not_retried(reason: str | None,
                                                      kind: FailureKind) -> None:
    assert classify(reason)[0] is kind


def test_backoff_is_exponential_capped_and_counted() -> None:
    assert [backoff(POLICY, n).total_seconds() for n in (1, 2, 3, 4)] == [10, 20, 25, 25]
    now = datetime(2026, 12, 3, tzinfo=UTC)
    first = decide(POLICY, 0, "missing source layers: x", now)
    assert first.state is RetryState.SCHEDULED and first.next_at == now + timedelta(seconds=10)
    assert decide(POLICY, 3, "missing source layers: x", now).state is RetryState.EXHAUSTED
    assert decide(POLICY, 0, "SignatureError: bad", now).state is RetryState.PERMANENT
    assert check_retries(0) == 0
    with pytest.raises(UsageError):
        check_retries(21)


def test_retry_policy_from_the_hub_config(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    assert retry.load_retry_policy(path) == RetryPolicy()
    path.write_text("[retries]\nretries = 5\nbase = 1.5\ncap = 30\n")
    assert retry.load_retry_policy(path) == RetryPolicy(5, 1.5, 30.0)
    path.write_text("[retries]\nbase = -1\n")
    with pytest.raises(FormatError):
        retry.load_retry_policy(path)


def _failed(fleet: Fleet, device: str, image: str, reason: str,
            deployment: str | None = None) -> StatusMessage:
    return StatusMessage(str(uuid.uuid4()), device, fleet.image_id(image), "failed",
                         reason=reason, deployment=deployment)


def _present(fleet: Fleet, device: str, image: str,
             deployment: str | None = None) -> StatusMessage:
    return StatusMessage(str(uuid.uuid4()), device, fleet.image_id(image), "present",
                         deployment=deployment)


def _send(fleet: Fleet, *messages: StatusMessage) -> None:
    handle_status_messages(fleet.engine, messages, store=fleet.store,
                           manifest_key=fleet.manifest_key, retry_policy=POLICY)


def _rows(fleet: Fleet) -> list[tuple[str, str, int]]:
    with session_scope(fleet.engine) as s:
        return [(r.image_id, r.state, r.retries_made)
                for r in s.scalars(select(DeliveryRetry).order_by(DeliveryRetry.id))]


def _retrier(fleet: Fleet) -> retry.Retrier:
    return retry.Retrier(fleet.ranker, fleet.builder, fleet.store, fleet.work / "retries",
                         POLICY)


def _offered(fleet: Fleet, deployment: str) -> set[str]:
    with session_scope(fleet.engine) as s:
        return set(s.scalars(select(BundleDevice.deployment_set_id).where(
            BundleDevice.deployment_set_id == deployment)))


def test_a_failed_delivery_is_retried_with_backoff_then_arrives(fleet: Fleet) -> None:
    dep = fleet.deploy(("a", "b")).deployment_id
    app2 = fleet.image_id("reg.io/app:2")
    built = len(fleet.builder.built)
    _send(fleet, _failed(fleet, "a", "reg.io/app:2", "missing source layers: sha256:rt"))
    assert _rows(fleet) == [(app2, "scheduled", 0)]
    retrier = _retrier(fleet)
    assert retrier.run_once(fleet.engine) == []  # not due yet: 10 s of backoff
    [child] = retrier.run_once(fleet.engine, datetime.now(UTC) + timedelta(seconds=11))
    assert _rows(fleet) == [(app2, "sent", 1)]
    assert len(fleet.builder.built) == built  # same sources: the stored bundle is reused
    assert _offered(fleet, child) == {child}  # offered again, as a new attempt
    with session_scope(fleet.engine) as s:
        assert retry.is_retry_set(s, child) and retry.original_set(s, child) == dep
    # the retry fails too: scheduled again, with a longer wait
    _send(fleet, _failed(fleet, "a", "reg.io/app:2", "IntegrityError: digest", child))
    with session_scope(fleet.engine) as s:
        row = s.scalars(select(DeliveryRetry)).one()
        assert (row.state, row.retries_made) == ("scheduled", 1)
        assert row.next_at is not None and row.next_at - row.updated_at == timedelta(seconds=20)
    [second] = retrier.run_once(fleet.engine, datetime.now(UTC) + LATER)
    _send(fleet, _present(fleet, "a", "reg.io/app:2", second),
          _present(fleet, "b", "reg.io/app:2"), _present(fleet, "b", "reg.io/web:2"),
          _present(fleet, "a", "reg.io/web:2"))
    with session_scope(fleet.engine) as s:
        assert s.get(DeploymentSet, dep).state == "active"  # type: ignore[union-attr]
        published = set(s.scalars(select(DesiredManifest.deployment_set_id)))
    assert dep in published and child not in published and second not in published
    assert fleet.desired("a").deployment == dep


def test_a_retry_rebuilds_the_bundle_only_when_the_sources_changed(fleet: Fleet) -> None:
    fleet.deploy(("a",))
    built = len(fleet.builder.built)
    _send(fleet, _failed(fleet, "a", "reg.io/app:2", "missing source layers: sha256:rt"))
    fleet.report("a", "reg.io/base:1")  # the device now holds other images
    _retrier(fleet).run_once(fleet.engine, datetime.now(UTC) + LATER)
    rebuilt = fleet.builder.built[built:]
    assert [s.target.image_id for s in rebuilt] == [fleet.image_id("reg.io/app:2")]


def test_permanent_failures_and_exhausted_retries_stop(fleet: Fleet) -> None:
    dep = fleet.deploy(("a", "b")).deployment_id
    with session_scope(fleet.engine) as s:
        retry.set_retries(s, dep, 1)  # --retries 1
    _send(fleet, _failed(fleet, "b", "reg.io/app:2", "SignatureError: the signature fails"),
          _failed(fleet, "a", "reg.io/web:2", "deferred: not enough free disk on the device"),
          _failed(fleet, "a", "reg.io/app:2", "missing source layers: sha256:rt"))
    states = {(i, s) for i, s, _ in _rows(fleet)}
    assert states == {(fleet.image_id("reg.io/app:2"), "permanent"),
                      (fleet.image_id("reg.io/web:2"), "permanent"),
                      (fleet.image_id("reg.io/app:2"), "scheduled")}
    retrier = _retrier(fleet)
    [child] = retrier.run_once(fleet.engine, datetime.now(UTC) + LATER)  # a's app:2 only
    _send(fleet, _failed(fleet, "a", "reg.io/app:2", "missing source layers: sha256:rt", child))
    assert retrier.run_once(fleet.engine, datetime.now(UTC) + LATER) == []
    with session_scope(fleet.engine) as s:
        rows = {r.state: r for r in s.scalars(select(DeliveryRetry))}
        assert rows["exhausted"].retries_made == 1
        docs = retry.retries_doc(s, dep)
    assert {d["state"] for d in docs} == {"permanent", "exhausted"}


def test_two_retriers_make_one_retry(fleet: Fleet) -> None:
    fleet.deploy(("a",))
    _send(fleet, _failed(fleet, "a", "reg.io/app:2", "missing source layers: sha256:rt"))
    when = datetime.now(UTC) + LATER
    first = retry.claim_due(fleet.engine, when)
    assert len(first) == 1 and retry.claim_due(fleet.engine, when) == []
    # a claim older than the lease (its hub died) is taken again
    assert retry.claim_due(fleet.engine, when + retry.LEASE + timedelta(seconds=1)) == first


def test_a_rollout_carries_its_retries(fleet: Fleet) -> None:
    from deltaport.pipelines import image_to_device as i2d
    from deltaport.pipelines import rollouts
    from deltaport.pipelines.manifest import parse_manifest
    from tests.fleet.test_pipelines import COMPOSE

    with pytest.raises(UsageError):
        rollouts.parse_spec(waves="100%", success="100%", error="1", retries=-1)
    spec = rollouts.parse_spec(waves="50%,100%", success="100%", error="1", retries=0)
    request = i2d.DeployRequest(parse_manifest(COMPOSE, {"REG": "reg.io"}), "alice",
                                "alice@example.com", ("a", "b"))
    doc, _ = rollouts.deploy_in_waves(fleet.engine, request, spec, ranker=fleet.ranker,
                                      builder=fleet.builder, store=fleet.store,
                                      work_dir=fleet.work, manifest_key=fleet.manifest_key)
    _send(fleet, _failed(fleet, "a", "reg.io/app:2", "missing source layers: sha256:rt"))
    with session_scope(fleet.engine) as s:
        status = rollouts.rollout_doc(s, rollouts.get(s, str(doc["rollout"])))
    assert [(r["device"], r["state"]) for r in status["retries"]] == [("a", "exhausted")]


def test_no_retry_once_the_rollout_is_cancelled(fleet: Fleet) -> None:
    from deltaport.pipelines import rollouts
    from deltaport.rollout.plan import RolloutAction
    from tests.rollout.test_rollouts_db import start

    _, rid = start(fleet)
    _send(fleet, _failed(fleet, "a", "reg.io/app:2", "missing source layers: sha256:rt"))
    with session_scope(fleet.engine) as s:
        rollouts.act(s, rid, RolloutAction.CANCEL,
                     rollouts.Activator(fleet.store, fleet.manifest_key))
    assert _retrier(fleet).run_once(fleet.engine, datetime.now(UTC) + LATER) == []
    assert [state for _, state, _ in _rows(fleet)] == ["permanent"]
    assert classify("cancelled by ops on the dashboard")[0] is FailureKind.PERMANENT


def test_one_email_when_a_delivery_fails_for_good(fleet: Fleet, smtp_server: SmtpServer) -> None:
    """Retried failures mail nobody; the requester gets one email once retries are exhausted
    (or at once for a permanent failure), through a real SMTP server."""
    dep = fleet.deploy(("a", "b")).deployment_id
    with session_scope(fleet.engine) as s:
        retry.set_retries(s, dep, 2)  # --retries 2
    notifier = SmtpNotifier(SmtpSettings(host=smtp_server.host, port=smtp_server.port,
                                         sender="dp@x", timeout=5.0))

    def send(*messages: StatusMessage) -> None:
        handle_status_messages(fleet.engine, messages, notifier=notifier, store=fleet.store,
                               manifest_key=fleet.manifest_key, retry_policy=POLICY)

    retrier, lost = _retrier(fleet), "missing source layers: sha256:rt"
    send(_failed(fleet, "a", "reg.io/app:2", lost),
         _failed(fleet, "b", "reg.io/app:2", "SignatureError: the signature fails"))
    [permanent] = smtp_server.messages()  # b's failure cannot improve: told at once
    assert permanent["Subject"] == f"deltaport: deployment {dep} failed on b"
    assert "Not retried: the signature was refused" in permanent.get_payload()
    for attempt in (1, 2):
        [child] = retrier.run_once(fleet.engine, datetime.now(UTC) + LATER)
        send(_failed(fleet, "a", "reg.io/app:2", lost, child))
        assert _rows(fleet)[0][1:] == ("scheduled" if attempt < 2 else "exhausted", attempt)
        if attempt < 2:
            assert len(smtp_server.messages()) == 1  # a retried failure mails nobody
    mails = smtp_server.messages()
    assert [m["Subject"] for m in mails] == [f"deltaport: deployment {dep} failed on b",
                                             f"deltaport: deployment {dep} failed on a"]
    body = mails[1].get_payload()
    assert lost in body and "Not retried: 2 of 2 retries made" in body
    assert all(m["To"] == "alice@example.com" for m in mails)


def test_a_retry_failing_for_good_at_the_hub_is_mailed_once(fleet: Fleet,
                                                            smtp_server: SmtpServer) -> None:
    """The last retry cannot even be built: the requester's one email goes through the
    durable outbox to the real SMTP server."""
    from deltaport.notify.outbox import Dispatcher

    dep = fleet.deploy(("a",)).deployment_id
    with session_scope(fleet.engine) as s:
        retry.set_retries(s, dep, 1)  # --retries 1
    _send(fleet, _failed(fleet, "a", "reg.io/app:2", "missing source layers: sha256:rt"))
    fleet.report("a", "reg.io/base:1")  # other sources: the retry must rebuild...
    fleet.builder.fail_on.add("reg.io/app:2")  # ...and cannot
    mailing = dataclasses.replace(_retrier(fleet), mail=True)
    assert mailing.run_once(fleet.engine, datetime.now(UTC) + LATER) == []
    assert [state for _, state, _ in _rows(fleet)] == ["exhausted"]
    notifier = SmtpNotifier(SmtpSettings(host=smtp_server.host, port=smtp_server.port,
                                         sender="dp@x", timeout=5.0))
    dispatcher = Dispatcher(fleet.engine, (), notifier)
    while dispatcher.run_once():
        pass
    [mail] = smtp_server.messages()
    assert mail["Subject"] == f"deltaport: deployment {dep} failed on a"
    assert "retry failed at the hub" in mail.get_payload()
    assert "Not retried: 1 of 1 retries made" in mail.get_payload()


def test_a_hub_with_retries_off_retries_no_deployment(fleet: Fleet) -> None:
    dep = fleet.deploy(("a",)).deployment_id
    with session_scope(fleet.engine) as s:
        retry.set_retries(s, dep, 2)  # --retries 2, but the hub says retries = 0
    handle_status_messages(fleet.engine, [_failed(fleet, "a", "reg.io/app:2", "lost")],
                           retry_policy=RetryPolicy(retries=0))
    assert [state for _, state, _ in _rows(fleet)] == ["exhausted"]  # failed for good: mailed
