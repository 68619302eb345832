"""Rollouts on the database: create one, advance it, act on it (docs/rollouts.md).

The decisions are :mod:`deltaport.rollout.plan` (pure); this module loads what they
need (:func:`load_view`), writes what they decided, activates a wave's devices
(``manifest_to_device.activate`` with the wave's devices) and records every change of
state as a ``rollout.*`` event through :func:`record_event` (the one place that tells
other systems: ``notify.bridge`` sends those rows to webhooks). :func:`advance` is
called after each batch of device messages (``pipelines.events``), after each
operator action, and by the hub's periodic tick.
The caller owns the transaction; emails are returned, sent after the commit.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from deltaport.errors import UnknownObjectError
from deltaport.fleet import deployment_sets
from deltaport.fleet.db import session_scope
from deltaport.fleet.models import Device, DeviceDeployment, Event, Rollout, RolloutDevice, utcnow
from deltaport.fleet.states import BAD_ACTIVATION_STATES, ActivationState
from deltaport.notify.email import Email
from deltaport.notify.events import EventKind
from deltaport.pipelines.image_to_device import (
    DeployRequest,
    DeployResult,
    deploy,
    deploy_result_doc,
)
from deltaport.pipelines.interfaces import BundleBuilder, SourceRanker
from deltaport.pipelines.manifest_to_device import activate, missing_images
from deltaport.pipelines.retry import retries_doc, set_retries
from deltaport.pipelines.retry_policy import check_retries
from deltaport.rollout.plan import (
    FINISHED,
    RolloutAction,
    RolloutState,
    RolloutView,
    Step,
    Threshold,
    WaveProgress,
    apply_action,
    assign_waves,
    next_step,
    order_devices,
    parse_threshold,
    parse_waves,
)
from deltaport.storage.base import BundleStore

EVENT_PREFIX = "rollout."  # events.kind of a rollout's change: its notify EventKind value
_SETTLED_KIND = {
    RolloutState.PAUSED: EventKind.ROLLOUT_PAUSED,
    RolloutState.AWAITING_APPROVAL: EventKind.ROLLOUT_WAITING_APPROVAL,
    RolloutState.COMPLETE: EventKind.ROLLOUT_COMPLETE,
    RolloutState.CANCELLED: EventKind.ROLLOUT_CANCELLED,
}
_ACTION_KIND = {
    RolloutAction.PAUSE: EventKind.ROLLOUT_PAUSED,
    RolloutAction.RESUME: EventKind.ROLLOUT_RESUMED,
    RolloutAction.APPROVE: EventKind.ROLLOUT_APPROVED,
    RolloutAction.CANCEL: EventKind.ROLLOUT_CANCELLED,
}
RESTING = frozenset({*FINISHED, RolloutState.PAUSED, RolloutState.AWAITING_APPROVAL})
OPEN_STATES = tuple(s.value for s in RolloutState if s not in FINISHED)


@dataclass(frozen=True)
class RolloutSpec:
    """How to roll a deployment set out (from `rollout create`)."""

    waves: tuple[int, ...]
    success: Threshold
    error: Threshold
    approve_each: bool = False
    canaries: tuple[str, ...] = ()
    retries: int | None = None  # automatic retries of a failed delivery (None: the hub's)


@dataclass(frozen=True)
class Activator:
    """What activating a wave needs: the bundle store and the hub's manifest key file."""

    store: BundleStore
    manifest_key: Path


def new_rollout_id() -> str:
    """r-YYYYmmddHHMMSS-xxxxxx: sortable by time, unique."""
    return f"r-{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"


def record_event(session: Session, rollout: Rollout, before: str | None, kind: EventKind,
                 detail: str) -> None:
    """Record a change of ROLLOUT's state in the fleet event log, as notify event KIND.

    The row's ``kind`` is KIND's value (``rollout.paused`` ...) and its detail starts
    with the rollout id; ``notify.bridge`` turns it into a webhook event.
    """
    session.add(Event(kind=kind.value, deployment_set_id=rollout.deployment_set_id,
                      from_status=before, to_status=rollout.state,
                      detail=f"{rollout.id}: {detail}"))


def create(session: Session, *, set_id: str, spec: RolloutSpec, requested_by: str,
           contact_email: str, activator: Activator) -> tuple[Rollout, list[Email]]:
    """Make the rollout of the (just recorded, not activated) deployment SET_ID and advance it.

    Raises:
        UnknownObjectError: unknown deployment.
        UsageError: a canary is not one of the set's devices.
    """
    deployment_sets.get_deployment_set(session, set_id)
    devices, _ = deployment_sets.set_members(session, set_id)
    rollout = Rollout(
        id=new_rollout_id(), deployment_set_id=set_id, state=RolloutState.STAGING.value,
        waves=list(spec.waves), current_wave=0, success_threshold=str(spec.success),
        error_threshold=str(spec.error), approve_each=spec.approve_each, approved_wave=0,
        failures_accepted=0, requested_by=requested_by, contact_email=contact_email,
    )
    waves = assign_waves(rollout.id, [d.name for d in devices], spec.waves, spec.canaries)
    ids = {d.name: d.id for d in devices}
    session.add(rollout)
    session.flush()
    order = order_devices(rollout.id, [d.name for d in devices], spec.canaries)
    for position, name in enumerate(order):
        session.add(RolloutDevice(rollout_id=rollout.id, device_id=ids[name],
                                  wave=waves[name], position=position))
    record_event(session, rollout, RolloutState.DRAFT.value, EventKind.ROLLOUT_CREATED,
                 f"created: {len(devices)} device(s) in {max(waves.values(), default=0)} wave(s)")
    session.flush()
    return rollout, advance(session, rollout, activator)


def get(session: Session, rollout_id: str) -> Rollout:
    """The rollout ROLLOUT_ID. Raises UnknownObjectError."""
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise UnknownObjectError(f"no rollout {rollout_id!r}")
    return rollout


def _members(session: Session, rollout: Rollout) -> list[tuple[str, int]]:
    """(device name, wave) of ROLLOUT, in order."""
    rows = session.execute(
        select(Device.name, RolloutDevice.wave)
        .join(Device, Device.id == RolloutDevice.device_id)
        .where(RolloutDevice.rollout_id == rollout.id)
        .order_by(RolloutDevice.position)
    ).tuples()
    return [(n, int(w)) for n, w in rows]


def _states(session: Session, set_id: str) -> dict[str, ActivationState]:
    rows = session.execute(
        select(Device.name, DeviceDeployment.state)
        .join(Device, Device.id == DeviceDeployment.device_id)
        .where(DeviceDeployment.deployment_set_id == set_id)
    ).tuples()
    return {n: ActivationState(s) for n, s in rows}


def load_view(session: Session, rollout: Rollout) -> RolloutView:
    """What the rollout's decisions need, as the database has it now."""
    members = _members(session, rollout)
    undelivered = {m.device for m in missing_images(session, rollout.deployment_set_id)}
    states = _states(session, rollout.deployment_set_id)
    count = max((w for _, w in members), default=0)
    waves = []
    for number in range(1, count + 1):
        names = [n for n, w in members if w == number]
        waves.append(WaveProgress(
            number=number,
            devices=len(names),
            delivered=sum(n not in undelivered for n in names),
            active=sum(states.get(n) is ActivationState.ACTIVE for n in names),
            failed=sum(states.get(n) in BAD_ACTIVATION_STATES for n in names),
            started=number <= rollout.current_wave,
        ))
    return RolloutView(
        state=RolloutState(rollout.state),
        current_wave=rollout.current_wave,
        waves=tuple(waves),
        success=parse_threshold(rollout.success_threshold, what="success threshold"),
        error=parse_threshold(rollout.error_threshold, what="error threshold"),
        approve_each=rollout.approve_each,
        approved_wave=rollout.approved_wave,
        failures_accepted=rollout.failures_accepted,
    )


def advance(session: Session, rollout: Rollout, activator: Activator) -> list[Email]:
    """Decide and do ROLLOUT's next step (start a wave, pause, wait, complete); its emails."""
    emails: list[Email] = []
    for _ in range(len(rollout.waves) + 1):  # a wave starts at most once per call
        step = next_step(load_view(session, rollout))
        if step.start_wave is None:
            _settle(session, rollout, step, emails)
            return emails
        _start_wave(session, rollout, step.start_wave, activator)
    return emails


def _start_wave(session: Session, rollout: Rollout, number: int, activator: Activator) -> None:
    names = [n for n, w in _members(session, rollout) if w == number]
    activate(session, set_id=rollout.deployment_set_id, store=activator.store,
             manifest_key=activator.manifest_key, devices=names)
    now = utcnow()
    for row in session.scalars(select(RolloutDevice).where(
            RolloutDevice.rollout_id == rollout.id, RolloutDevice.wave == number)):
        row.activated_at = now
    before = rollout.state
    approved = rollout.approve_each and rollout.approved_wave >= number  # told when it waited
    if rollout.current_wave and not approved:
        record_event(session, rollout, before, EventKind.ROLLOUT_WAVE_COMPLETE,
                     f"wave {rollout.current_wave} reached its success threshold")
    rollout.state = RolloutState.RUNNING.value
    rollout.current_wave = number
    rollout.failures_accepted = 0
    rollout.reason = f"wave {number} activating"
    rollout.updated_at = now
    record_event(session, rollout, before, EventKind.ROLLOUT_WAVE_STARTED,
                 f"wave {number} started: {', '.join(names)}")
    session.flush()


def _settle(session: Session, rollout: Rollout, step: Step, emails: list[Email]) -> None:
    before = rollout.state
    if step.state.value == before:
        if step.state not in RESTING:  # a resting rollout keeps the reason it stopped for
            rollout.reason = step.reason
        session.flush()
        return
    rollout.reason = step.reason
    rollout.state = step.state.value
    rollout.updated_at = utcnow()
    if step.state in FINISHED:
        rollout.finished_at = rollout.updated_at
    if step.state in (RolloutState.COMPLETE, RolloutState.AWAITING_APPROVAL):
        record_event(session, rollout, before, EventKind.ROLLOUT_WAVE_COMPLETE,
                     f"wave {rollout.current_wave} reached its success threshold")
    record_event(session, rollout, before,
                 _SETTLED_KIND.get(step.state, EventKind.ROLLOUT_RESUMED), step.reason)
    if step.state in (RolloutState.PAUSED, RolloutState.AWAITING_APPROVAL,
                      RolloutState.COMPLETE):
        emails.append(_email(rollout, step.reason))
    session.flush()


def _email(rollout: Rollout, reason: str) -> Email:
    return Email(
        to=rollout.contact_email,
        subject=f"deltaport: rollout {rollout.id} {rollout.state}",
        body=(f"Rollout {rollout.id} of deployment {rollout.deployment_set_id} is "
              f"{rollout.state}.\n{reason}\nSee: deltaport rollout status {rollout.id}\n"),
    )


def act(session: Session, rollout_id: str, action: RolloutAction,
        activator: Activator) -> tuple[Rollout, list[Email]]:
    """An operator's pause / resume / approve / cancel, then the next step.

    Raises:
        UnknownObjectError: no such rollout.
        StateError: the action does not apply in the rollout's state.
    """
    rollout = get(session, rollout_id)
    view = load_view(session, rollout)
    after = apply_action(view, action)
    before = rollout.state
    rollout.state = after.state.value
    rollout.approved_wave = after.approved_wave
    rollout.failures_accepted = after.failures_accepted
    rollout.updated_at = utcnow()
    if after.state in FINISHED:
        rollout.finished_at = rollout.updated_at
    rollout.reason = f"{action.value} by operator"
    record_event(session, rollout, before, _ACTION_KIND[action], rollout.reason)
    session.flush()
    return rollout, advance(session, rollout, activator)


def open_rollouts_of(session: Session, device_names: Sequence[str] | None = None) -> list[str]:
    """Ids of unfinished rollouts (those with one of DEVICE_NAMES, when given)."""
    stmt = select(Rollout.id).where(Rollout.state.in_(OPEN_STATES)).order_by(Rollout.id)
    if device_names is not None:
        stmt = stmt.where(Rollout.id.in_(
            select(RolloutDevice.rollout_id)
            .join(Device, Device.id == RolloutDevice.device_id)
            .where(Device.name.in_(sorted(set(device_names))))
        ))
    return list(session.scalars(stmt))


def owns_set(session: Session, set_id: str) -> bool:
    """A rollout activates SET_ID (so it is not activated all at once when complete)."""
    return session.scalar(select(Rollout.id).where(Rollout.deployment_set_id == set_id)) \
        is not None


def tick(engine: Engine, activator: Activator,
         device_names: Sequence[str] | None = None) -> tuple[list[str], list[Email]]:
    """Advance every open rollout (of DEVICE_NAMES), each in its own transaction.

    A rollout whose wave cannot be activated (a key missing, an image gone) is paused
    with the reason, and the others go on.
    """
    from deltaport.errors import DeltaportError

    with session_scope(engine) as session:
        ids = open_rollouts_of(session, device_names)
    emails: list[Email] = []
    for rid in ids:
        try:
            with session_scope(engine) as session:
                emails += advance(session, get(session, rid), activator)
        except DeltaportError as exc:
            with session_scope(engine) as session:
                rollout = get(session, rid)
                step = Step(RolloutState.PAUSED, None, f"paused: {exc}")
                _settle(session, rollout, step, emails)
    return ids, emails


def rollout_doc(session: Session, rollout: Rollout) -> dict[str, Any]:
    """The JSON `rollout status --json` prints and the API answers."""
    view = load_view(session, rollout)
    members = _members(session, rollout)
    step = next_step(view)
    return {
        "rollout": rollout.id,
        "deployment": rollout.deployment_set_id,
        "state": rollout.state,
        "reason": rollout.reason or step.reason,
        "current_wave": rollout.current_wave,
        "success_threshold": rollout.success_threshold,
        "error_threshold": rollout.error_threshold,
        "approve_each": rollout.approve_each,
        "requested_by": rollout.requested_by,
        "retries": retries_doc(session, rollout.deployment_set_id),
        "waves": [
            {
                "wave": w.number,
                "percent": rollout.waves[w.number - 1] if w.number <= len(rollout.waves)
                else 100,
                "devices": [n for n, wave in members if wave == w.number],
                "delivered": w.delivered,
                "active": w.active,
                "failed": w.failed,
                "started": w.started,
            }
            for w in view.waves
        ],
    }



def parse_spec(*, waves: str, success: str, error: str, approve_each: bool = False,
               canaries: Sequence[str] = (), retries: int | None = None) -> RolloutSpec:
    """The options of `rollout create` (or the API body) as a RolloutSpec. Raises UsageError."""
    return RolloutSpec(
        waves=parse_waves(waves),
        success=parse_threshold(success, what="--success-threshold", percent_only=True),
        error=parse_threshold(error, what="--error-threshold"),
        approve_each=approve_each,
        canaries=tuple(dict.fromkeys(c for c in canaries if c)),
        retries=None if retries is None else check_retries(retries),
    )


def deploy_in_waves(engine: Engine, request: DeployRequest, spec: RolloutSpec, *,
                    ranker: SourceRanker, builder: BundleBuilder, store: BundleStore,
                    work_dir: Path, manifest_key: Path) -> tuple[dict[str, Any], list[Email]]:
    """Deploy REQUEST to stage it everywhere, its rollout made in the same transaction.

    Returns the rollout's status document (with the deployment's plan under
    ``plan``) and the emails to send after the commit.
    """
    made: dict[str, Any] = {}

    def start(session: Session, result: DeployResult) -> None:
        if spec.retries is not None:
            set_retries(session, result.deployment_id, spec.retries)
        rollout, made["emails"] = create(
            session, set_id=result.deployment_id, spec=spec,
            requested_by=request.requested_by, contact_email=request.contact_email,
            activator=Activator(store, manifest_key))
        made["id"] = rollout.id

    result = deploy(engine, request, ranker=ranker, builder=builder, store=store,
                    work_dir=work_dir, activate_when_complete=False, manifest_key=manifest_key,
                    on_recorded=start)
    with session_scope(engine) as session:
        doc = rollout_doc(session, get(session, made["id"]))
    return {**doc, "plan": deploy_result_doc(result)}, made["emails"]


def act_now(engine: Engine, rollout_id: str, action: RolloutAction,
            activator: Activator) -> tuple[dict[str, Any], list[Email]]:
    """:func:`act` in its own transaction; the rollout's status document and emails."""
    with session_scope(engine) as session:
        rollout, emails = act(session, rollout_id, action, activator)
        return rollout_doc(session, rollout), emails


def status_doc(engine: Engine, rollout_id: str) -> dict[str, Any]:
    """`rollout status ID --json`. Raises UnknownObjectError."""
    with session_scope(engine) as session:
        return rollout_doc(session, get(session, rollout_id))
