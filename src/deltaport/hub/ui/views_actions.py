"""What an ``operator`` may do from the dashboard: activate, cancel, retry a failed image.

Every action is a POST carrying the session's CSRF token; a viewer is refused (403).
The first POST answers a confirmation page saying what will happen; only its own
form, posted with ``confirmed=yes``, acts. The three actions are one flow
(:func:`action_route`); what differs is data (:data:`ACTIONS`). Each action, done
or refused by the fleet, lands in the audit log (and so in the event log) under the
signed-in operator's name, as the API's writes do (:mod:`deltaport.hub.audit`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import and_, or_, select

from deltaport.errors import DeltaportError, StateError
from deltaport.fleet import audit, deployment_sets, device_images
from deltaport.fleet import queries as fleet_queries
from deltaport.fleet.db import session_scope
from deltaport.fleet.models import DeviceImage
from deltaport.fleet.states import ImageEvent, ImageStatus, SetEvent, SetState
from deltaport.hub.deps import Hub, HubState
from deltaport.hub.errors import status_for
from deltaport.hub.offers import DEFERRED_PREFIX
from deltaport.hub.ui.sessions import SignedIn
from deltaport.hub.ui.web import (
    PREFIX,
    Form,
    Me,
    check_csrf,
    check_may_act,
    error_page,
    path_segment,
    redirect,
    render,
)
from deltaport.pipelines.manifest_to_device import activate, manifest_key_path

router = APIRouter(prefix=PREFIX, include_in_schema=False)
CONFIRMED = "yes"
Fields = dict[str, str]


class UiAction(StrEnum):
    """The dashboard's actions, as they stand in ``/ui/actions/{action}``."""

    ACTIVATE = "activate"
    RETRY = "retry"
    CANCEL = "cancel"


def _record(hub: HubState, request: Request, me: SignedIn, action: audit.AuditAction,
            target: str, outcome: int) -> None:
    client = request.client
    entry = audit.AuditRecord(me.operator, action, target, client.host if client else "?",
                              outcome)
    with session_scope(hub.engine) as session:
        audit.record(session, entry)


def retry_image(hub: HubState, *, device_name: str, image_id: str, operator: str) -> str:
    """Send a failed device image's bundle again (failed → in_transit); its deployment id.

    Raises:
        UnknownObjectError: no such device.
        StateError: the device has no failed image IMAGE_ID.
    """
    with session_scope(hub.engine) as session:
        device = fleet_queries.get_device(session, device_name)
        row = session.query(DeviceImage).filter_by(device_id=device.id, image_id=image_id).first()
        if row is None or row.status != ImageStatus.FAILED.value:
            found = row.status if row is not None else "no such image"
            raise StateError(f"{device_name}: image {image_id} is not failed ({found})")
        device_images.transition_image(
            session, device_id=device.id, image_id=image_id, event=ImageEvent.SEND,
            deployment_set_id=row.deployment_set_id, bundle_id=row.bundle_id,
            reason=f"retry asked by {operator} on the dashboard",
        )
        return row.deployment_set_id or ""


def cancel_deployment(hub: HubState, *, set_id: str, operator: str) -> int:
    """Stop offering a deployment's bundles: every image still on its way fails; how many.

    In transit (and deferred, which the agent would retry) → failed with the reason
    "cancelled by OPERATOR"; the set becomes failed. A device already downloading
    finishes what it has (its report of arrival still counts); Retry sends one again.

    Raises:
        UnknownObjectError: no such deployment.
        StateError: the deployment is not in progress (complete or active).
    """
    reason = f"cancelled by {operator} on the dashboard"
    with session_scope(hub.engine) as session:
        dset = deployment_sets.get_deployment_set(session, set_id)
        if dset.state not in (SetState.PENDING.value, SetState.FAILED.value):
            raise StateError(f"deployment {set_id} is {dset.state}: nothing to cancel")
        waiting = session.execute(
            select(DeviceImage.device_id, DeviceImage.image_id).where(
                DeviceImage.deployment_set_id == set_id,
                or_(DeviceImage.status == ImageStatus.IN_TRANSIT.value,
                    and_(DeviceImage.status == ImageStatus.FAILED.value,
                         DeviceImage.failure_reason.startswith(DEFERRED_PREFIX))))
        ).all()
        for device_id, image_id in waiting:
            device_images.transition_image(session, device_id=device_id, image_id=image_id,
                                           event=ImageEvent.FAILED, deployment_set_id=set_id,
                                           reason=reason)
        if dset.state == SetState.PENDING.value:
            deployment_sets.transition_set(session, dset, SetEvent.IMAGE_FAILED, reason)
        return len(waiting)


def _activate(hub: HubState, fields: Fields, operator: str) -> None:
    key = manifest_key_path(hub.settings.fleet.keys_dir)
    with session_scope(hub.engine) as session:
        activate(session, set_id=fields["deployment"], store=hub.store, manifest_key=key)


def _retry(hub: HubState, fields: Fields, operator: str) -> None:
    retry_image(hub, device_name=fields["device"], image_id=fields["image_id"],
                operator=operator)


def _cancel(hub: HubState, fields: Fields, operator: str) -> None:
    cancel_deployment(hub, set_id=fields["deployment"], operator=operator)


@dataclass(frozen=True)
class ActionSpec:
    """What one action needs: its audit word, form fields, what it says, what it does."""

    audit: audit.AuditAction
    fields: tuple[str, ...]  # carried from the first POST to the confirmation's form
    target: tuple[str, ...]  # the fields naming the target in the audit log
    explain: str  # str.format over the fields, shown on the confirmation page
    run: Callable[[HubState, Fields, str], None]  # (hub, fields, operator)


ACTIONS: dict[UiAction, ActionSpec] = {
    UiAction.ACTIVATE: ActionSpec(
        audit.AuditAction.ACTIVATE, ("deployment",), ("deployment",),
        "Activate deployment {deployment}: every device of it gets a new signed desired "
        "manifest and starts its images.", _activate),
    UiAction.RETRY: ActionSpec(
        audit.AuditAction.RETRY, ("device", "image_id", "deployment"), ("device", "image_id"),
        "Retry image {image_id} on {device}: its bundle is offered to the device again.",
        _retry),
    UiAction.CANCEL: ActionSpec(
        audit.AuditAction.CANCEL, ("deployment",), ("deployment",),
        "Cancel deployment {deployment}: its bundles are no longer offered; every image "
        "still in transit is marked failed (Retry sends one again).", _cancel),
}


def _back(fields: Fields) -> str:
    """Where the action was asked from: the deployment's page, else the device's."""
    if fields.get("deployment") or "device" not in fields:
        return f"{PREFIX}/deployments/{path_segment(fields.get('deployment', ''))}"
    return f"{PREFIX}/devices/{path_segment(fields['device'])}"


@router.post("/actions/{action}")
def action_route(action: UiAction, request: Request, me: Me, hub: Hub,
                 form: Form) -> Response:
    """An action: checked (CSRF, role), confirmed, done, audited either way."""
    spec = ACTIONS[action]
    fields = {k: form.get(k, "") for k in spec.fields}
    back = _back(fields)
    try:
        check_csrf(me, form)
        check_may_act(me)
    except DeltaportError as exc:
        return error_page(exc, me)
    if form.get("confirmed") != CONFIRMED:
        return render("confirm.html", {"me": me, "action": action.value,
                                       "what": spec.explain.format(**fields),
                                       "fields": fields, "back": back})
    target = " ".join(fields[k] for k in spec.target)
    try:
        spec.run(hub, fields, me.operator)
    except DeltaportError as exc:
        _record(hub, request, me, spec.audit, target, status_for(exc))
        return error_page(exc, me)
    _record(hub, request, me, spec.audit, target, 200)
    return redirect(back)
