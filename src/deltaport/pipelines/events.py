"""The status-event handler: what devices report about images becomes fleet state.

success → device image ``present``; failure → ``failed`` with the reason, and an
email to the contact of each deployment set waiting for it; when the last image of a
set has arrived on all its devices → the set is ``complete``, its contact is emailed
and it is activated (manifest-to-device).

Messages are idempotent by id. A batch is one transaction, decided in memory
against one snapshot (``deltaport.fleet.ingest``), so one bad message is rejected
without losing the others and a batch costs a handful of queries. Emails are sent
after the commit; an email that cannot be sent is recorded in the event log, never
rolls the state back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from deltaport.errors import DeltaportError, StateError
from deltaport.fleet import ingest, queries
from deltaport.fleet.db import session_scope
from deltaport.fleet.documents import StatusMessage
from deltaport.notify.email import Email, Notifier
from deltaport.pipelines.manifest_to_device import activate
from deltaport.storage.base import BundleStore


@dataclass(frozen=True)
class MessageResult:
    """What one message did."""

    message_id: str
    outcome: str  # "applied" | "unchanged" | "duplicate" | "rejected"
    status: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class IngestResult:
    """What a batch of messages did."""

    results: tuple[MessageResult, ...]
    completed: tuple[str, ...]  # deployment sets now complete
    activated: tuple[str, ...]
    emails_sent: int
    email_errors: tuple[str, ...]


def _failure_email(set_id: str, to: str, msg: StatusMessage) -> Email:
    device = msg.device
    return Email(
        to=to,
        subject=f"deltaport: deployment {set_id} failed on {device}",
        body=(
            f"Image {msg.image_id} could not be installed on device {device}.\n"
            f"Reason: {msg.reason or '(none given)'}\nDeployment: {set_id}\n"
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
    messages: Sequence[StatusMessage],
    *,
    notifier: Notifier | None = None,
    store: BundleStore | None = None,
    strict: bool = False,
) -> IngestResult:
    """Apply MESSAGES in one transaction, then activate completed sets and send emails.

    With STRICT, the first rejected message raises and nothing is applied (what
    `deltaport event apply` does by default); otherwise rejected messages are reported
    in the result and the others applied. Without STORE, completed sets are not
    activated.

    Raises:
        StateError: (strict) a message names an unknown device or deployment, or is
            out of order.
        StorageError: the database is locked or unreachable.
    """
    with session_scope(engine) as session:
        verdicts, changes = ingest.decide(messages, ingest.load_batch(session, messages))
        rejected = [v for v in verdicts if v.outcome == "rejected"]
        if strict and rejected:
            raise StateError(f"message {rejected[0].message.message_id}: {rejected[0].error}")
        ingest.write(session, changes)
        news = ingest.follow_up(session, changes)
        completed = [(d.id, d.contact_email) for d in news.completed]
        emails = [_failure_email(d.id, d.contact_email, c.message) for d, c in news.failed]
    activated, more = _after_commit(engine, completed, store)
    sent, errors = _send_all(engine, notifier, emails + more)
    return IngestResult(
        results=tuple(
            MessageResult(v.message.message_id, v.outcome, v.status, v.error) for v in verdicts
        ),
        completed=tuple(s for s, _ in completed),
        activated=tuple(activated),
        emails_sent=sent,
        email_errors=tuple(errors),
    )


def _after_commit(
    engine: Engine, completed: Sequence[tuple[str, str]], store: BundleStore | None
) -> tuple[list[str], list[Email]]:
    """Activate each completed set (own transaction each) and prepare its email."""
    activated, emails = [], []
    for set_id, contact in completed:
        error = None
        if store is not None:
            try:
                with session_scope(engine) as session:
                    activate(session, set_id=set_id, store=store)
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
                queries.log_event(session, kind="notify_failed", detail=f"{email.to}: {exc}")
    return sent, errors
