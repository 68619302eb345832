"""The operator API: what the CLI does (deploy, activate, status, register, add device), over HTTP.

Each endpoint calls the same pipeline and query function as the matching command
(``deltaport deploy`` → ``image_to_device.deploy``, ``deltaport status device`` →
``fleet.status.device_status``, …) and answers with the same JSON the command prints
with ``--json``, so :mod:`deltaport.hub.client` can stand in for the local database.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, BackgroundTasks, Query, Request
from pydantic import BaseModel, ValidationError

from deltaport.errors import DeltaportError, FormatError
from deltaport.fleet import audit, queries
from deltaport.fleet import status as fleet_status
from deltaport.fleet.db import session_scope
from deltaport.hub import schemas
from deltaport.hub.audit import note_target
from deltaport.hub.deps import CurrentOperator, Hub, OperatorBody
from deltaport.jobs.queue import deploy_via_workers, uses_workers
from deltaport.pipelines.device_labels import relabel
from deltaport.pipelines.image_to_device import (
    DeployRequest,
    deploy,
    deploy_result_doc,
    register,
    registered_image_doc,
)
from deltaport.pipelines.manifest import parse_manifest
from deltaport.pipelines.manifest_to_device import activate, activation_doc, manifest_key_path
from deltaport.pipelines.retry import retries_recorder
from deltaport.pipelines.retry_policy import check_retries

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["operator"], responses=schemas.ERRORS)
M = TypeVar("M", bound=BaseModel)
HISTORY_SINCE_MAX = timedelta(days=3660)  # how far back GET /history may look


def parse_body(model: type[M], body: bytes) -> M:
    """BODY as MODEL; a malformed body is a FormatError naming the bad fields."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise FormatError(f"bad request body: {fields}") from exc


@router.post("/deployments", openapi_extra=schemas.body_doc(schemas.DeployRequestDoc))
def create_deployment(
    operator: CurrentOperator, body: OperatorBody, hub: Hub, request: Request
) -> dict[str, Any]:
    """Deploy a manifest to devices (by name or label): build each bundle once, record the set."""
    doc = parse_body(schemas.DeployRequestDoc, body)
    if not doc.by or not doc.email:
        raise FormatError("'by' and 'email' are required")
    if doc.retries is not None:
        check_retries(doc.retries)
    order = DeployRequest(
        manifest=parse_manifest(doc.manifest.encode(), doc.vars, doc.manifest_name),
        requested_by=doc.by,
        contact_email=doc.email,
        device_names=tuple(doc.devices),
        labels=queries.parse_labels(f"{k}={v}" for k, v in doc.labels.items()),
        priority=doc.priority,
        unsigned=doc.unsigned,
    )
    data_dir = hub.settings.fleet.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    if uses_workers(hub.settings.fleet):  # builds = "workers": enqueued, answers at once
        result = deploy_via_workers(hub.engine, hub.settings.fleet, order,
                                    ranker=hub.toolkit.ranker, builder=hub.toolkit.builder,
                                    store=hub.store, retries=doc.retries)
        note_target(request, result.deployment_id)
        return deploy_result_doc(result)
    with tempfile.TemporaryDirectory(prefix="deploy-", dir=data_dir) as work:
        result = deploy(
            hub.engine,
            order,
            ranker=hub.toolkit.ranker,
            builder=hub.toolkit.builder,
            store=hub.store,
            work_dir=Path(work),
            manifest_key=manifest_key_path(hub.settings.fleet.keys_dir),
            on_recorded=retries_recorder(doc.retries),
        )
    note_target(request, result.deployment_id)
    return deploy_result_doc(result)


@router.post("/deployments/{deployment_id}/activate")
def activate_deployment(deployment_id: str, operator: CurrentOperator, hub: Hub) -> dict[str, Any]:
    """Publish the deployment's signed desired manifests (a new version per device), once
    every image is on every device."""
    key = manifest_key_path(hub.settings.fleet.keys_dir)
    with session_scope(hub.engine) as session:
        result = activate(session, set_id=deployment_id, store=hub.store, manifest_key=key)
    return activation_doc(result)


@router.get("/deployments/{deployment_id}")
def get_deployment(deployment_id: str, operator: CurrentOperator, hub: Hub) -> dict[str, Any]:
    """One deployment: its state, every device's images and activation state."""
    with session_scope(hub.engine) as session:
        return fleet_status.deployment_status(session, deployment_id)


@router.get("/deployments")
def list_deployments(
    operator: CurrentOperator,
    hub: Hub,
    by: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    """Recent deployments, newest first, optionally only those ordered by BY."""
    with session_scope(hub.engine) as session:
        return fleet_status.deployments(session, by=by, limit=limit)


@router.get("/devices/{name}")
def get_device(name: str, operator: CurrentOperator, hub: Hub) -> dict[str, Any]:
    """One device: its images, its deployments, what it runs (desired vs running)."""
    with session_scope(hub.engine) as session:
        return fleet_status.device_status(session, name)


@router.post("/devices", status_code=201, openapi_extra=schemas.body_doc(schemas.AddDeviceDoc))
def add_device(
    operator: CurrentOperator, body: OperatorBody, hub: Hub, request: Request
) -> dict[str, Any]:
    """Add a device; the answer holds its token, the only time it exists in clear."""
    doc = parse_body(schemas.AddDeviceDoc, body)
    note_target(request, doc.name)
    rate = queries.parse_link_rate(doc.link_rate)
    labels = queries.parse_labels(f"{k}={v}" for k, v in doc.labels.items())
    with session_scope(hub.engine) as session:
        device, token = queries.add_device(
            session,
            name=doc.name,
            link_rate_bps=rate,
            labels=labels,
            local_registry=doc.local_registry,
        )
    return {"device": device.name, "token": token, "link_rate_bps": rate, "labels": labels}


@router.post("/devices/{name}/labels",
             openapi_extra=schemas.body_doc(schemas.LabelDeviceDoc))
def label_device(name: str, operator: CurrentOperator, body: OperatorBody,
                 hub: Hub) -> dict[str, Any]:
    """Set or remove a device's labels; a ``maintenance-window`` is checked and signed
    into the device's next desired manifest (docs/rollouts.md §4)."""
    doc = parse_body(schemas.LabelDeviceDoc, body)
    with session_scope(hub.engine) as session:
        return relabel(session, name, doc.set, doc.remove)


@router.get("/images/{reference:path}")
def get_image(reference: str, operator: CurrentOperator, hub: Hub) -> dict[str, Any]:
    """One registered image (NAME:TAG, NAME@DIGEST or sha256:… image ID): who has it."""
    with session_scope(hub.engine) as session:
        return fleet_status.image_status(session, reference)


@router.post("/images", status_code=201, openapi_extra=schemas.body_doc(schemas.RegisterImageDoc))
def register_image(
    operator: CurrentOperator,
    body: OperatorBody,
    hub: Hub,
    background: BackgroundTasks,
    request: Request,
) -> dict[str, Any]:
    """Record an image (CI pushed it to the cloud registry) and store its signature file.

    With ``prebuild``, its layer patches are built after the answer is sent.
    """
    doc = parse_body(schemas.RegisterImageDoc, body)
    note_target(request, doc.name or doc.reference)
    with session_scope(hub.engine) as session:
        image = register(
            session,
            reference=doc.reference,
            name=doc.name,
            reader=hub.toolkit.reader,
            signer=hub.toolkit.signer,
            signatures_dir=hub.settings.fleet.signatures_dir,
            build_id=doc.build_id,
            registered_by=doc.by or operator.name,
        )
        answer = registered_image_doc(image)
    note_target(request, answer["image"])
    if doc.prebuild:
        background.add_task(_prebuild, hub, doc.reference)
        answer["prebuild"] = "started"
    return answer


def _prebuild(hub: Any, reference: str) -> None:
    """Fill the patch cache for REFERENCE; a failure is logged (deploy builds anyway)."""
    data_dir = hub.settings.fleet.data_dir
    try:
        built = hub.toolkit.builder.prebuild(reference, data_dir)
    except DeltaportError as exc:
        log.warning("prebuilding layer patches of %s failed: %s", reference, exc)
        return
    log.info("prebuilt %d layer patch(es) of %s", built, reference)


@router.get("/history")
def history(
    operator: CurrentOperator,
    hub: Hub,
    since: str = "24h",
    every: str = "hour",
) -> list[dict[str, Any]]:
    """Device-image status changes since SINCE (24h, 7d, ISO time), counted per bucket."""
    when = history_since(since)
    with session_scope(hub.engine) as session:
        return fleet_status.history(session, since=when, every=every)


@router.get("/audit", response_model=list[schemas.AuditEntryDoc])
def audit_log(
    operator: CurrentOperator,
    hub: Hub,
    since: str | None = None,
    by: Annotated[str | None, Query(alias="operator", max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=audit.AUDIT_LIMIT_MAX)] = 100,
) -> list[dict[str, Any]]:
    """Operator changes (who, what, target, from where, HTTP status), newest first."""
    when = history_since(since) if since is not None else None
    with session_scope(hub.engine) as session:
        return audit.entries(session, since=when, operator=by, limit=limit)


def history_since(text: str) -> datetime:
    """SINCE of ``GET /history`` as a UTC time no earlier than HISTORY_SINCE_MAX ago.

    Raises:
        UsageError: not 24h, 30m, 7d or an ISO 8601 time.
        FormatError: a time out of range (overflow, or older than HISTORY_SINCE_MAX).
    """
    if len(text) > 64:
        raise FormatError("since is longer than 64 characters")
    now = datetime.now(UTC)
    try:
        when = fleet_status.parse_since(text, now=now).astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise FormatError(f"since {text!r} is out of range") from exc
    if not now - HISTORY_SINCE_MAX <= when <= now + timedelta(days=1):
        raise FormatError(f"since must lie within {HISTORY_SINCE_MAX.days} days of now")
    return when
