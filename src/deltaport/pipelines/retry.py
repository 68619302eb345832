"""Automatic retries of failed deliveries (issue 14; the rules: ``retry_policy``).

At status-message time (:func:`schedule`, called by ``pipelines.events`` in the
transaction that records the failure) each newly failed (set, device, image) gets a
:class:`~deltaport.fleet.models.DeliveryRetry` row: scheduled with exponential backoff,
or not retried (a permanent failure, or every retry made). The hub's background loop
(:class:`Retrier`, run by ``notify.hub``'s thread) makes the retries that are due.

A retry is what an operator did by hand before: a deployment of the same manifest to
that one device, recorded as a *retry set* of the original (``deployment_retries``).
The agent takes it as a new attempt (its ledger is keyed by bundle and deployment);
the planner reuses the stored bundle when the device's sources are unchanged and
builds a new one only when they changed (or the stored one is gone or stale). The
original set completes when the image arrives (completion is per device and image),
so its activation or rollout goes on as usual; a retry set is never activated or
mailed about by itself. Retries are claimed by compare-and-set, so two hubs never make
the same one; a claim older than ``LEASE`` (a hub died meanwhile) is taken again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from deltaport.config import read_toml_file
from deltaport.errors import DeltaportError, FormatError, UsageError
from deltaport.fleet import deployment_sets
from deltaport.fleet.db import session_scope
from deltaport.fleet.models import (
    DeliveryRetry,
    DeploymentRetry,
    Device,
    DeviceImage,
    Event,
    Rollout,
    utcnow,
)
from deltaport.fleet.states import ImageStatus
from deltaport.notify.email import Email
from deltaport.notify.events import EventKind, record
from deltaport.pipelines.image_to_device import DeployRequest, DeployResult, deploy
from deltaport.pipelines.interfaces import BundleBuilder, SourceRanker
from deltaport.pipelines.manifest_to_device import stored_manifest
from deltaport.pipelines.retry_policy import (
    RetryDecision,
    RetryPolicy,
    RetryState,
    check_retries,
    decide,
)
from deltaport.rollout.plan import RolloutState
from deltaport.storage.base import BundleStore

log = logging.getLogger(__name__)

EVENT_KIND = "delivery_retry"  # events.kind of a retry's change of state
LEASE = timedelta(hours=1)  # a claim older than this is taken again
BATCH = 20  # retries claimed at once
CHAIN_MAX = 50  # retry sets followed back to the original
CANCELLED_PREFIX = "cancelled by "  # the reason a cancelled deployment's images fail with
FINAL_STATES = frozenset({RetryState.PERMANENT, RetryState.EXHAUSTED})  # failed for good


@dataclass(frozen=True)
class Failure:
    """A newly failed image on a device, as a status message reported it."""

    set_id: str
    device_id: int
    image_id: str
    reason: str | None


def load_retry_policy(path: Path | None) -> RetryPolicy:
    """The ``[retries]`` table of the hub config file at PATH (defaults without one).

    ``retries`` (default automatic retries per failed image, 0 turns them off),
    ``base`` (seconds before the first retry) and ``cap`` (longest wait).

    Raises:
        FormatError: a value of the wrong type or out of range.
    """
    if path is None or not path.exists():
        return RetryPolicy()
    raw = read_toml_file(path).get("retries", {})
    if not isinstance(raw, dict):
        raise FormatError("hub config: [retries] must be a table")
    policy = RetryPolicy()
    try:
        retries = check_retries(raw.get("retries", policy.retries))
    except UsageError as exc:
        raise FormatError(f"hub config: [retries] {exc}") from None
    base, cap = raw.get("base", policy.base), raw.get("cap", policy.cap)
    for name, value in (("base", base), ("cap", cap)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise FormatError(f"hub config: [retries] {name} must be seconds >= 0")
    return RetryPolicy(retries=retries, base=float(base), cap=float(cap))


def original_set(session: Session, set_id: str) -> str:
    """The set SET_ID retries (followed back to the first), or SET_ID itself."""
    current = set_id
    for _ in range(CHAIN_MAX):
        row = session.get(DeploymentRetry, current)
        if row is None or row.retry_of is None:
            return current
        current = row.retry_of
    return current


def is_retry_set(session: Session, set_id: str) -> bool:
    """SET_ID was made by an automatic retry (never activated or mailed about itself)."""
    row = session.get(DeploymentRetry, set_id)
    return row is not None and row.retry_of is not None


def set_retries(session: Session, set_id: str, retries: int) -> None:
    """Record ``--retries RETRIES`` for the set SET_ID."""
    row = session.get(DeploymentRetry, set_id)
    if row is None:
        session.add(DeploymentRetry(deployment_set_id=set_id, retries=retries))
    else:
        row.retries = retries


def retries_recorder(retries: int | None) -> Callable[[Session, DeployResult], None] | None:
    """An ``on_recorded`` hook for ``deploy`` that records ``--retries RETRIES`` with the set
    (None when RETRIES is None: the hub's default applies)."""
    if retries is None:
        return None
    count = retries

    def record(session: Session, result: DeployResult) -> None:
        set_retries(session, result.deployment_id, count)

    return record


def policy_of(session: Session, set_id: str, base: RetryPolicy) -> RetryPolicy:
    """BASE with the set's own ``--retries``, if it has one; a hub whose ``retries = 0``
    retries nothing (it runs no retrier), so then BASE."""
    row = session.get(DeploymentRetry, set_id)
    if row is None or row.retries is None or base.retries == 0:
        return base
    return replace(base, retries=row.retries)


def _log(session: Session, row: DeliveryRetry, before: str | None, why: str) -> None:
    session.add(Event(kind=EVENT_KIND, deployment_set_id=row.deployment_set_id,
                      device_id=row.device_id, image_id=row.image_id, from_status=before,
                      to_status=row.state, detail=why[:1000]))


def schedule(session: Session, failures: Sequence[Failure], base: RetryPolicy,
             now: datetime | None = None) -> list[tuple[DeliveryRetry, RetryDecision]]:
    """Decide the retry of each failure (in the caller's transaction); the decisions."""
    when = now or utcnow()
    out: list[tuple[DeliveryRetry, RetryDecision]] = []
    seen: set[tuple[str, int, str]] = set()
    for failure in failures:
        root = original_set(session, failure.set_id)
        key = (root, failure.device_id, failure.image_id)
        if key in seen:  # the original and its retry set both saw this failure
            continue
        seen.add(key)
        row = session.scalar(select(DeliveryRetry).where(
            DeliveryRetry.deployment_set_id == root, DeliveryRetry.device_id == failure.device_id,
            DeliveryRetry.image_id == failure.image_id))
        if row is None:
            row = DeliveryRetry(deployment_set_id=root, device_id=failure.device_id,
                                image_id=failure.image_id, retries_made=0,
                                state=RetryState.SCHEDULED.value)
            session.add(row)
            before = None
        else:
            before = row.state
        decision = decide(policy_of(session, root, base), row.retries_made, failure.reason,
                          when)
        row.state, row.next_at = decision.state.value, decision.next_at
        row.reason, row.updated_at = failure.reason, when
        _log(session, row, before, decision.why)
        out.append((row, decision))
    session.flush()
    return out


def claim_due(engine: Engine, now: datetime | None = None,
              limit: int = BATCH) -> list[int]:
    """Claim up to LIMIT due retries (scheduled and due, or a stale claim); their ids."""
    when = now or utcnow()
    due = or_(
        and_(DeliveryRetry.state == RetryState.SCHEDULED.value, DeliveryRetry.next_at <= when),
        and_(DeliveryRetry.state == RetryState.RETRYING.value,
             DeliveryRetry.updated_at < when - LEASE),
    )
    won: list[int] = []
    with session_scope(engine) as session:
        rows = session.execute(select(DeliveryRetry.id, DeliveryRetry.state).where(due)
                               .order_by(DeliveryRetry.next_at, DeliveryRetry.id)
                               .limit(limit)).all()
        for row_id, state in rows:
            done = session.execute(
                update(DeliveryRetry)
                .where(DeliveryRetry.id == row_id, DeliveryRetry.state == state, due)
                .values(state=RetryState.RETRYING.value, updated_at=when)
            )
            if getattr(done, "rowcount", 0) == 1:
                won.append(row_id)
    return won


@dataclass(frozen=True)
class Retrier:
    """Makes due retries: what the hub's background loop calls."""

    ranker: SourceRanker
    builder: BundleBuilder
    store: BundleStore
    work_dir: Path
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    mail: bool = False  # the hub sends email: a retry failing for good at the hub is mailed

    def run_once(self, engine: Engine, now: datetime | None = None) -> list[str]:
        """Claim the due retries and make them, one retry set per set and device; their ids."""
        claimed = claim_due(engine, now)
        groups: dict[tuple[str, int], list[int]] = {}
        with session_scope(engine) as session:
            for row_id in claimed:
                row = session.get(DeliveryRetry, row_id)
                if row is not None:
                    groups.setdefault((row.deployment_set_id, row.device_id), []).append(row_id)
        made = []
        for (set_id, device_id), ids in groups.items():
            child = self._retry(engine, set_id, device_id, ids)
            if child is not None:
                made.append(child)
        return made

    def _still_failed(self, session: Session, rows: Sequence[DeliveryRetry]) -> list[DeliveryRetry]:
        """ROWS whose image is still not on the device and still wanted (the others are
        settled: sent, or permanent when the deployment or its rollout was cancelled)."""
        left = []
        for row in rows:
            status, reason = session.execute(
                select(DeviceImage.status, DeviceImage.failure_reason).where(
                    DeviceImage.device_id == row.device_id,
                    DeviceImage.image_id == row.image_id)).one_or_none() or (None, None)
            cancelled = (reason or "").startswith(CANCELLED_PREFIX) or session.scalar(
                select(Rollout.id).where(Rollout.deployment_set_id == row.deployment_set_id,
                                         Rollout.state == RolloutState.CANCELLED.value)) is not None
            if cancelled:
                before, row.state = row.state, RetryState.PERMANENT.value
                _log(session, row, before, "not retried: the deployment was cancelled")
            elif status in (ImageStatus.PRESENT.value, ImageStatus.IN_TRANSIT.value):
                before, row.state = row.state, RetryState.SENT.value
                _log(session, row, before, f"not retried: the image is {status} meanwhile")
            else:
                left.append(row)
        return left

    def _retry(self, engine: Engine, set_id: str, device_id: int,
               ids: Sequence[int]) -> str | None:
        with session_scope(engine) as session:
            rows = self._still_failed(session, [r for r in (session.get(DeliveryRetry, i)
                                                            for i in ids) if r is not None])
            if not rows:
                return None
            dset = deployment_sets.get_deployment_set(session, set_id)
            device = session.get(Device, device_id)
            assert device is not None  # FK guarantees it
            request = DeployRequest(
                manifest=stored_manifest(dset), requested_by=dset.requested_by,
                contact_email=dset.contact_email, device_names=(device.name,),
                priority=dset.priority)
        row_ids = [r.id for r in rows]

        def recorded(session: Session, result: DeployResult) -> None:
            session.add(DeploymentRetry(deployment_set_id=result.deployment_id, retry_of=set_id))
            for row_id in row_ids:
                row = session.get(DeliveryRetry, row_id)
                assert row is not None
                before = row.state
                row.retries_made += 1
                row.state, row.retry_set_id = RetryState.SENT.value, result.deployment_id
                row.next_at, row.updated_at = None, utcnow()
                reused = "reused" if not result.built else "rebuilt"
                _log(session, row, before, f"retry {row.retries_made}: deployment "
                     f"{result.deployment_id} ({reused} bundle)")

        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            result = deploy(engine, request, ranker=self.ranker, builder=self.builder,
                            store=self.store, work_dir=self.work_dir,
                            activate_when_complete=False, on_recorded=recorded)
        except DeltaportError as exc:
            log.warning("retry of %s on %s failed at the hub: %s", set_id, request.device_names,
                        exc)
            self._failed_at_hub(engine, set_id, row_ids, f"retry failed at the hub: {exc}")
            return None
        log.info("retried %s on %s: deployment %s", set_id, request.device_names[0],
                 result.deployment_id)
        return result.deployment_id

    def _failed_at_hub(self, engine: Engine, set_id: str, row_ids: Sequence[int],
                       reason: str) -> None:
        with session_scope(engine) as session:
            policy = policy_of(session, set_id, self.policy)
            for row_id in row_ids:
                row = session.get(DeliveryRetry, row_id)
                assert row is not None
                before = row.state
                row.retries_made += 1
                decision = decide(policy, row.retries_made, None, utcnow())
                row.state, row.next_at = decision.state.value, decision.next_at
                row.reason, row.updated_at = reason[:2000], utcnow()
                _log(session, row, before, f"{reason}; {decision.why}")
                if self.mail and decision.state in FINAL_STATES:
                    _queue_final_email(session, set_id, row, reason, decision.why)


def _queue_final_email(session: Session, set_id: str, row: DeliveryRetry, reason: str,
                       why: str) -> None:
    """Queue (outbox, durable) the one email for ROW's delivery failing for good at the hub."""
    dset = deployment_sets.get_deployment_set(session, set_id)
    device = session.get(Device, row.device_id)
    name = device.name if device is not None else str(row.device_id)
    email = Email(to=dset.contact_email,
                  subject=f"deltaport: deployment {set_id} failed on {name}",
                  body=(f"Image {row.image_id} could not be sent to device {name} again.\n"
                        f"Reason: {reason}\nDeployment: {set_id}\n"
                        f"{why[:1].upper()}{why[1:]}.\n"))
    record(session, EventKind.IMAGE_FAILED, set_id,
           {"deployment": set_id, "device": name, "image": row.image_id, "detail": reason},
           emails=[email])


def retries_doc(session: Session, set_id: str) -> list[dict[str, object]]:
    """The retries of SET_ID (for status documents): device, image, state, retries made."""
    rows = session.execute(
        select(DeliveryRetry, Device.name).join(Device, Device.id == DeliveryRetry.device_id)
        .where(DeliveryRetry.deployment_set_id == set_id).order_by(DeliveryRetry.id)).all()
    return [{"device": name, "image_id": r.image_id, "state": r.state,
             "retries_made": r.retries_made,
             "next_at": r.next_at.isoformat() if r.next_at else None,
             "reason": r.reason, "retry_deployment": r.retry_set_id} for r, name in rows]
