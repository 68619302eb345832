"""What an ``operator`` may do from the dashboard: activate, cancel, retry a failed image.

Every action is a POST carrying the session's CSRF token; a viewer is refused (403).
The first POST answers a confirmation page saying what will happen; only its own
form, posted with ``confirmed=yes``, acts. Each action, done or refused by the fleet,
lands in the audit log (and so in the event log) under the signed-in operator's name,
as the API's writes do (:mod:`deltaport.hub.audit`).
"""

from __future__ import annotations

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


def _record(hub: HubState, request: Request, me: SignedIn, action: audit.AuditAction,
            target: str, outcome: int) -> None:
    client = request.client
    entry = audit.AuditRecord(me.operator, action, target, client.host if client else "?",
                              outcome)
    with session_scope(hub.engine) as session:
        audit.record(session, entry)


def _confirm(me: SignedIn, action: str, what: str, fields: dict[str, str],
             back: str) -> Response:
    return render("confirm.html", {"me": me, "action": action, "what": what,
                                   "fields": fields, "back": back})


@router.post("/actions/activate")
def activate_action(request: Request, me: Me, hub: Hub, form: Form) -> Response:
    """Activate a deployment (after confirmation): publish its desired manifests."""
    set_id = form.get("deployment", "")
    back = f"{PREFIX}/deployments/{path_segment(set_id)}"
    try:
        check_csrf(me, form)
        check_may_act(me)
    except DeltaportError as exc:
        return error_page(exc, me)
    if form.get("confirmed") != CONFIRMED:
        return _confirm(me, "activate", f"Activate deployment {set_id}: every device of it "
                        "gets a new signed desired manifest and starts its images.",
                        {"deployment": set_id}, back)
    key = manifest_key_path(hub.settings.fleet.keys_dir)
    try:
        with session_scope(hub.engine) as session:
            activate(session, set_id=set_id, store=hub.store, manifest_key=key)
    except DeltaportError as exc:
        _record(hub, request, me, audit.AuditAction.ACTIVATE, set_id, status_for(exc))
        return error_page(exc, me)
    _record(hub, request, me, audit.AuditAction.ACTIVATE, set_id, 200)
    return redirect(back)


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


@router.post("/actions/retry")
def retry_action(request: Request, me: Me, hub: Hub, form: Form) -> Response:
    """Retry a failed device image (after confirmation): its bundle is offered again."""
    device, image_id = form.get("device", ""), form.get("image_id", "")
    back = f"{PREFIX}/devices/{path_segment(device)}"
    if form.get("deployment"):
        back = f"{PREFIX}/deployments/{path_segment(form['deployment'])}"
    try:
        check_csrf(me, form)
        check_may_act(me)
    except DeltaportError as exc:
        return error_page(exc, me)
    target = f"{device} {image_id}"
    if form.get("confirmed") != CONFIRMED:
        fields = {"device": device, "image_id": image_id,
                  "deployment": form.get("deployment", "")}
        return _confirm(me, "retry", f"Retry image {image_id} on {device}: its bundle is "
                        "offered to the device again.", fields, back)
    try:
        retry_image(hub, device_name=device, image_id=image_id, operator=me.operator)
    except DeltaportError as exc:
        _record(hub, request, me, audit.AuditAction.RETRY, target, status_for(exc))
        return error_page(exc, me)
    _record(hub, request, me, audit.AuditAction.RETRY, target, 200)
    return redirect(back)


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


@router.post("/actions/cancel")
def cancel_action(request: Request, me: Me, hub: Hub, form: Form) -> Response:
    """Cancel a deployment in progress (after confirmation)."""
    set_id = form.get("deployment", "")
    back = f"{PREFIX}/deployments/{path_segment(set_id)}"
    try:
        check_csrf(me, form)
        check_may_act(me)
    except DeltaportError as exc:
        return error_page(exc, me)
    if form.get("confirmed") != CONFIRMED:
        return _confirm(me, "cancel", f"Cancel deployment {set_id}: its bundles are no longer "
                        "offered; every image still in transit is marked failed (Retry sends "
                        "one again).", {"deployment": set_id}, back)
    try:
        cancel_deployment(hub, set_id=set_id, operator=me.operator)
    except DeltaportError as exc:
        _record(hub, request, me, audit.AuditAction.CANCEL, set_id, status_for(exc))
        return error_page(exc, me)
    _record(hub, request, me, audit.AuditAction.CANCEL, set_id, 200)
    return redirect(back)
