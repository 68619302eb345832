"""The audit log: who (operator) changed what (action, target), when, from where, and how it went.

The hub records every operator request that changes something (``remote`` is the
client's address, ``outcome`` the HTTP status it answered, refusals included); the
local CLI records the commands that write the database directly (``remote`` is
:data:`LOCAL`, the operator the OS user, ``outcome`` :data:`LOCAL_DONE`). Each entry
is also one ``audit`` row in the event log, so ``deltaport event``/history readers
see it. Writing and reading take a session; the caller owns the transaction.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from deltaport.errors import UsageError
from deltaport.fleet.models import AuditEntry, Event, utcnow

AUDIT_LIMIT_MAX = 1000  # entries one `status audit` / GET /audit answers at most
OPERATOR_MAX_CHARS = 200  # the column widths of audit_log
TARGET_MAX_CHARS = 300
REMOTE_MAX_CHARS = 100
LOCAL = "local"  # ``remote`` of an entry the local CLI wrote
LOCAL_DONE = 0  # ``outcome`` of a local command that completed
EVENT_KIND = "audit"  # ``events.kind`` of the event-log copy


class AuditAction(StrEnum):
    """What an operator did (one per operator route or CLI command that writes)."""

    IMAGE_REGISTER = "image.register"
    DEVICE_ADD = "device.add"
    DEVICE_LABEL = "device.label"  # labels set or removed (a maintenance window, too)
    DEVICE_REPORT = "device.report"
    DEPLOY = "deployment.create"
    ACTIVATE = "deployment.activate"
    RETRY = "device_image.retry"  # the dashboard sent a failed image's bundle again
    CANCEL = "deployment.cancel"  # the dashboard stopped offering a deployment's bundles


@dataclass(frozen=True)
class AuditRecord:
    """One entry to write."""

    operator: str
    action: AuditAction
    target: str | None
    remote: str
    outcome: int  # HTTP status on the hub; LOCAL_DONE for a local command
    at: datetime | None = None


def _clip(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]


def record(session: Session, entry: AuditRecord) -> None:
    """Add ENTRY to the audit log and its one-line copy to the event log."""
    at = entry.at or utcnow()
    operator = _clip(entry.operator, OPERATOR_MAX_CHARS) or "?"
    target = _clip(entry.target, TARGET_MAX_CHARS)
    remote = _clip(entry.remote, REMOTE_MAX_CHARS) or "?"
    session.add(
        AuditEntry(
            at=at,
            operator=operator,
            action=entry.action.value,
            target=target,
            remote=remote,
            outcome=entry.outcome,
        )
    )
    session.add(Event(at=at, kind=EVENT_KIND, detail=summary(entry)))


def record_local(session: Session, action: AuditAction, target: str | None) -> None:
    """Record a local CLI command that wrote the database: the OS user, from "local"."""
    record(session, AuditRecord(local_operator(), action, target, LOCAL, LOCAL_DONE))


def local_operator() -> str:
    """The OS user running the CLI (``?`` when the system cannot say)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry for the uid
        return "?"


def summary(entry: AuditRecord) -> str:
    """``alice image.register reg.io/web:2 from 127.0.0.1: 201`` (the event-log line)."""
    target = f" {entry.target}" if entry.target else ""
    return f"{entry.operator} {entry.action.value}{target} from {entry.remote}: {entry.outcome}"


def entries(
    session: Session,
    *,
    since: datetime | None = None,
    operator: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Audit entries, newest first, as JSON-ready dicts (what `status audit --json` prints).

    Raises:
        UsageError: LIMIT is not within 1..AUDIT_LIMIT_MAX.
    """
    if not 1 <= limit <= AUDIT_LIMIT_MAX:
        raise UsageError(f"--limit must be within 1..{AUDIT_LIMIT_MAX}")
    query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if operator is not None:
        query = query.where(AuditEntry.operator == operator)
    return [entry_doc(e) for e in session.scalars(query)]


def entry_doc(entry: AuditEntry) -> dict[str, Any]:
    """One entry as JSON."""
    return {
        "at": entry.at.isoformat(),
        "operator": entry.operator,
        "action": entry.action,
        "target": entry.target,
        "remote": entry.remote,
        "outcome": entry.outcome,
    }
