"""The status-event handler: what devices report about images and activations becomes fleet state.

success → device image ``present``; failure → ``failed`` with the reason, an automatic
retry (``pipelines.retry``), and, once it fails for good (a permanent failure, or every
retry made), one email to the contact of the deployment set waiting for it; ``removed``
(the agent's GC) → ``removed``, so the planner no longer uses it as a source; when the last image
of a set has arrived on all its devices → the set is ``complete``, its contact is
emailed and it is activated (manifest-to-device).

Activation messages (``kind: activation``, docs/device-runtime.md §3) go to
``deltaport.fleet.activation``: the device × deployment state, and an email to the
deployment's contact when a device reports ``rolled_back``, ``failed`` or ``refused``.

Messages are idempotent by id. A batch is one transaction, decided in memory
against one snapshot (``deltaport.fleet.ingest``), so one bad message is rejected
without losing the others and a batch costs a handful of queries. Emails are sent
after the commit; an email that cannot be sent is recorded in the event log, never
rolls the state back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from deltaport.errors import DeltaportError, StateError
from deltaport.fleet import activation, device_images, ingest
from deltaport.fleet.db import session_scope
from deltaport.fleet.documents import ActivationMessage, DeviceMessage, StatusMessage
from deltaport.fleet.models import DeliveryRetry, DeploymentSet
from deltaport.fleet.states import MessageOutcome
from deltaport.notify.email import Email, Notifier
from deltaport.pipelines import retry, rollouts
from deltaport.pipelines.manifest_to_device import activate
from deltaport.pipelines.retry_policy import RetryDecision, RetryPolicy
from deltaport.storage.base import BundleStore


@dataclass(frozen=True)
class MessageResult:
    """What one message did."""

    message_id: str
    outcome: MessageOutcome
    status: str | None = None  # the image status, or the activation state
    error: str | None = None


@dataclass(frozen=True)
class IngestResult:
    """What a batch of messages did."""

    results: tuple[MessageResult, ...]
    completed: tuple[str, ...]  # deployment sets now complete
    activated: tuple[str, ...]
    emails_sent: int
    email_errors: tuple[str, ...]


def _failure_email(set_id: str, to: str, msg: StatusMessage, why: str = "") -> Email:
    device = msg.device
    tried = f"{why[:1].upper()}{why[1:]}.\n" if why else ""  # "Not retried: 3 of 3 ..."
    return Email(
        to=to,
        subject=f"deltaport: deployment {set_id} failed on {device}",
        body=(
            f"Image {msg.image_id} could not be installed on device {device}.\n"
            f"Reason: {msg.reason or '(none given)'}\nDeployment: {set_id}\n" + tried
        ),
    )


def _final_failure_emails(
    session: Session,
    failed: Sequence[tuple[DeploymentSet, ingest.Change]],
    decisions: Sequence[tuple[DeliveryRetry, RetryDecision]],
) -> list[Email]:
    """One email per (original set, device, image) that failed for good in this batch: a
    permanent failure or every retry made; a failure that will be retried mails nobody
    (webhooks still hear of every attempt, ``deployment.image_failed``)."""
    final = {(r.deployment_set_id, r.device_id, r.image_id): (r, d) for r, d in decisions
             if d.state in retry.FINAL_STATES}
    emails = []
    for dset, change in failed:
        key = (retry.original_set(session, dset.id), change.device_id, change.message.image_id)
        if key not in final:
            continue
        _, decision = final.pop(key)  # the original and its retry set: mailed once
        emails.append(_failure_email(key[0], dset.contact_email, change.message, decision.why))
    return emails


def _activation_email(to: str, msg: ActivationMessage) -> Email:
    module = f"Module: {msg.module} (exit code {msg.exit_code}, restarts {msg.restart_count})\n"
    logs = "".join(f"  {line}\n" for line in msg.logs)
    return Email(
        to=to,
        subject=(
            f"deltaport: deployment {msg.deployment} {msg.outcome.value} on {msg.device}"
        ),
        body=(
            f"Device {msg.device} reports {msg.outcome.value} for deployment {msg.deployment} "
            f"(desired manifest v{msg.version}).\nReason: {msg.reason or '(none given)'}\n"
            + (module if msg.module else "")
            + (f"Last log lines:\n{logs}" if logs else "")
        ),
    )


def _complete_email(set_id: str, to: str, activated: bool, error: str | None) -> Email:
    then = "It has been activated." if activated else f"Activation failed: {error}"
    return Email(
        to=to,
        subject=f"deltaport: deployment {set_id} complete",
        body=f"Every image of deployment {set_id} is present on all its devices.\n{then}\n",
    )


def handle_status_messages(
    engine: Engine,
    messages: Sequence[DeviceMessage],
    *,
    notifier: Notifier | None = None,
    store: BundleStore | None = None,
    manifest_key: Path | None = None,
    strict: bool = False,
    retry_policy: RetryPolicy | None = None,
) -> IngestResult:
    """Apply MESSAGES in one transaction, then activate completed sets and send emails.

    Image and activation messages may be mixed; results come back in message order.
    With STRICT, the first rejected message raises and nothing is applied (what
    `deltaport event apply` does by default); otherwise rejected messages are reported
    in the result and the others applied. Without STORE and MANIFEST_KEY (the hub's
    manifest key file), completed sets are not activated. A newly failed image is
    scheduled for an automatic retry under RETRY_POLICY (``pipelines.retry``); a set
    made by a retry is neither activated nor mailed about (its original is).

    Raises:
        StateError: (strict) a message names an unknown device or deployment, or is
            out of order.
        StorageError: the database is locked or unreachable.
    """
    images = [m for m in messages if isinstance(m, StatusMessage)]
    activations = [m for m in messages if isinstance(m, ActivationMessage)]
    with session_scope(engine) as session:
        verdicts, changes = ingest.decide(images, ingest.load_batch(session, images))
        decided = activation.decide(activations, activation.load_snapshot(session, activations))
        rejected = [(v.message.message_id, v.error) for v in verdicts if _refused(v.outcome)]
        rejected += [(a.message.message_id, a.error) for a in decided if _refused(a.outcome)]
        if strict and rejected:
            raise StateError(f"message {rejected[0][0]}: {rejected[0][1]}")
        ingest.write(session, changes)
        activation.write(session, decided)
        news = ingest.follow_up(session, changes)
        decisions = retry.schedule(
            session, [retry.Failure(d.id, c.device_id, c.message.image_id, c.message.reason)
                      for d, c in news.failed], retry_policy or RetryPolicy())
        completed = [(d.id, d.contact_email) for d in news.completed
                     if not retry.is_retry_set(session, d.id)]
        emails = _final_failure_emails(session, news.failed, decisions)
        emails += [_activation_email(v.contact or "", v.message) for v in decided if v.newly_bad]
    activate_with = (store, manifest_key) if store is not None and manifest_key else None
    activated, more = _after_commit(engine, completed, activate_with)
    if activate_with is not None:  # waves waiting on these devices may start or stop now
        _, waves = rollouts.tick(engine, rollouts.Activator(*activate_with),
                                 sorted({m.device for m in messages}))
        more += waves
    sent, errors = _send_all(engine, notifier, emails + more)
    return IngestResult(
        results=_in_order(messages, verdicts, decided),
        completed=tuple(s for s, _ in completed),
        activated=tuple(activated),
        emails_sent=sent,
        email_errors=tuple(errors),
    )


def _refused(outcome: MessageOutcome) -> bool:
    return outcome is MessageOutcome.REJECTED


def _in_order(
    messages: Sequence[DeviceMessage],
    verdicts: Sequence[ingest.Verdict],
    decided: Sequence[activation.ActivationVerdict],
) -> tuple[MessageResult, ...]:
    """One result per message, in the order of MESSAGES (each kind was decided in order)."""
    images = iter(verdicts)
    activations = iter(decided)
    out = []
    for m in messages:
        if isinstance(m, StatusMessage):
            v = next(images)
            out.append(MessageResult(m.message_id, v.outcome, v.status, v.error))
        else:
            a = next(activations)
            state = a.state.value if a.state is not None else None
            out.append(MessageResult(m.message_id, a.outcome, state, a.error))
    return tuple(out)


def _after_commit(
    engine: Engine,
    completed: Sequence[tuple[str, str]],
    activate_with: tuple[BundleStore, Path] | None,
) -> tuple[list[str], list[Email]]:
    """Activate each completed set (own transaction each) and prepare its email."""
    activated, emails = [], []
    for set_id, contact in completed:
        error = None
        with session_scope(engine) as session:
            by_waves = rollouts.owns_set(session, set_id)
        if by_waves:  # its rollout activates it wave by wave
            emails.append(Email(
                to=contact, subject=f"deltaport: deployment {set_id} complete",
                body=f"Every image of deployment {set_id} is present on all its devices.\n"
                     "Its rollout activates it wave by wave (deltaport rollout status).\n"))
            continue
        if activate_with is not None:
            store, key = activate_with
            try:
                with session_scope(engine) as session:
                    activate(session, set_id=set_id, store=store, manifest_key=key)
                activated.append(set_id)
            except DeltaportError as exc:
                error = str(exc)
        emails.append(_complete_email(set_id, contact, set_id in activated, error))
    return activated, emails


def _send_all(
    engine: Engine, notifier: Notifier | None, emails: Sequence[Email]
) -> tuple[int, list[str]]:
    """Send EMAILS; a failure is logged as a 'notify_failed' event, not raised."""
    if notifier is None:
        return 0, []
    sent, errors = 0, []
    for email in emails:
        try:
            notifier.send(email)
            sent += 1
        except DeltaportError as exc:
            errors.append(str(exc))
            with session_scope(engine) as session:
                device_images.log_event(session, kind="notify_failed", detail=f"{email.to}: {exc}")
    return sent, errors
