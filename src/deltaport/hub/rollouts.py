"""The rollout API: what `deltaport rollout …` does, over HTTP (docs/hub-api.md).

``POST /api/v1/rollouts`` deploys a manifest (delivery to every device at once) and
makes its rollout; ``GET /api/v1/rollouts/{id}`` is `rollout status --json`;
``POST /api/v1/rollouts/{id}/{pause|resume|approve|cancel}`` acts on it. Each answers
the rollout's status document, the same JSON the command prints with ``--json``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, StrictBool, StrictInt

from deltaport.errors import DeltaportError, FormatError
from deltaport.fleet import queries
from deltaport.hub import schemas
from deltaport.hub.audit import note_target
from deltaport.hub.deps import CurrentOperator, Hub, HubState, OperatorBody
from deltaport.hub.operator import parse_body
from deltaport.notify.email import Email
from deltaport.pipelines import rollouts
from deltaport.pipelines.image_to_device import DeployRequest
from deltaport.pipelines.manifest import parse_manifest
from deltaport.pipelines.manifest_to_device import manifest_key_path
from deltaport.rollout.plan import DEFAULT_ERROR, DEFAULT_SUCCESS, DEFAULT_WAVES, RolloutAction

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["rollouts"], responses=schemas.ERRORS)


class RolloutRequestDoc(BaseModel):
    manifest: str = Field(description="IoT Edge deployment(.template).json or Compose text")
    devices: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    by: str
    email: str
    vars: dict[str, str] = Field(default_factory=dict, description="values for ${NAME}")
    manifest_name: str = "manifest"
    waves: str = Field(DEFAULT_WAVES, description="cumulative percentages, ending at 100%")
    success_threshold: str = Field(DEFAULT_SUCCESS, description="share of a wave active")
    error_threshold: str = Field(DEFAULT_ERROR, description="share (2%) or count (3) failed")
    approve_each: StrictBool = False
    canaries: list[str] = Field(default_factory=list, description="devices of wave 1, first")
    retries: StrictInt | None = Field(None, description="automatic retries of a failed "
                                      "delivery (default: the hub's [retries])")


def _activator(hub: HubState) -> rollouts.Activator:
    return rollouts.Activator(hub.store, manifest_key_path(hub.settings.fleet.keys_dir))


def _send(hub: HubState, emails: Sequence[Email]) -> None:
    """Send after the commit; a failed email is logged (the notify outbox retries later)."""
    if hub.notifier is None:
        return
    for email in emails:
        try:
            hub.notifier.send(email)
        except DeltaportError as exc:
            log.warning("rollout email to %s failed: %s", email.to, exc)


@router.post("/rollouts", status_code=201, openapi_extra=schemas.body_doc(RolloutRequestDoc))
def create_rollout(
    operator: CurrentOperator, body: OperatorBody, hub: Hub, request: Request
) -> dict[str, Any]:
    """Stage a manifest on its devices and activate it wave by wave."""
    doc = parse_body(RolloutRequestDoc, body)
    if not doc.by or not doc.email:
        raise FormatError("'by' and 'email' are required")
    spec = rollouts.parse_spec(waves=doc.waves, success=doc.success_threshold,
                               error=doc.error_threshold, approve_each=doc.approve_each,
                               canaries=doc.canaries, retries=doc.retries)
    order = DeployRequest(
        manifest=parse_manifest(doc.manifest.encode(), doc.vars, doc.manifest_name),
        requested_by=doc.by,
        contact_email=doc.email,
        device_names=tuple(doc.devices),
        labels=queries.parse_labels(f"{k}={v}" for k, v in doc.labels.items()),
    )
    data_dir = hub.settings.fleet.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    activator = _activator(hub)
    with tempfile.TemporaryDirectory(prefix="rollout-", dir=data_dir) as work:
        answer, emails = rollouts.deploy_in_waves(
            hub.engine, order, spec, ranker=hub.toolkit.ranker, builder=hub.toolkit.builder,
            store=hub.store, work_dir=Path(work), manifest_key=activator.manifest_key)
    note_target(request, str(answer["rollout"]))
    _send(hub, emails)
    return answer


@router.get("/rollouts/{rollout_id}")
def get_rollout(rollout_id: str, operator: CurrentOperator, hub: Hub) -> dict[str, Any]:
    """One rollout: each wave, its devices and counts, and why it waits."""
    return rollouts.status_doc(hub.engine, rollout_id)


@router.post("/rollouts/{rollout_id}/{action}")
def act_on_rollout(
    rollout_id: str, action: RolloutAction, operator: CurrentOperator, hub: Hub,
    request: Request,
) -> dict[str, Any]:
    """Pause, resume, approve (the next wave) or cancel a rollout."""
    doc, emails = rollouts.act_now(hub.engine, rollout_id, action, _activator(hub))
    note_target(request, rollout_id)
    _send(hub, emails)
    return doc
