"""The device API (docs/hub-api.md): check-in, status, bundle list and download, download
progress, desired manifest, runtime reports.

Every endpoint knows the device from its token (``CurrentDevice``); no endpoint
takes a device name. Handlers are plain ``def`` (FastAPI runs them in a thread
pool) and call the same fleet and pipeline functions the CLI calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Header, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from deltaport.errors import AccessError, FormatError, StorageError, UnknownObjectError
from deltaport.fleet import device_images, progress, queries, runtime
from deltaport.fleet.db import session_scope
from deltaport.fleet.documents import (
    ID_MAX_CHARS,
    DeviceMessage,
    Inventory,
    RuntimeHeartbeat,
    StatusMessage,
    check_image_id,
    device_message_from_dict,
    load_json,
    parse_inventory,
    parse_runtime_body,
)
from deltaport.fleet.models import Device
from deltaport.fleet.states import ImageStatus
from deltaport.hub import offers, schemas
from deltaport.hub.deps import CurrentDevice, DeviceBody, Hub, HubState
from deltaport.hub.errors import ErrorCode, error_body
from deltaport.hub.ranges import Slice, Unsatisfiable, choose_slice
from deltaport.pipelines.events import handle_status_messages
from deltaport.pipelines.manifest_to_device import manifest_key_path

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/device", tags=["device"], responses=schemas.ERRORS)


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    doc = load_json(body, what)
    if not isinstance(doc, dict):
        raise FormatError(f"{what} must be a JSON object")
    return doc


def parse_checkin(body: bytes) -> Inventory:
    """The inventory of a check-in body ``{"inventory": {...}}``, by the fleet parser."""
    inventory = _json_object(body, "check-in").get("inventory")
    if not isinstance(inventory, dict):
        raise FormatError("check-in must be an object with an 'inventory' object")
    return parse_inventory(json.dumps(inventory).encode())


def parse_status_batch(body: bytes, limit: int) -> tuple[DeviceMessage, ...]:
    """The messages (image or activation) of a body ``{"messages": [...]}``, at most LIMIT."""
    items = _json_object(body, "status batch").get("messages")
    if not isinstance(items, list):
        raise FormatError("status batch must be an object with a 'messages' list")
    if len(items) > limit:
        raise FormatError(f"status batch holds more than {limit} messages")
    parsed = [device_message_from_dict(m, f"messages[{i}]") for i, m in enumerate(items)]
    return tuple(first_per_id(parsed))


def first_per_id(messages: list[DeviceMessage]) -> list[DeviceMessage]:
    """MESSAGES without later repeats of a message id: the first one is the one judged,
    so an id gets one answer (accepted or rejected), never both."""
    seen: set[str] = set()
    kept = []
    for m in messages:
        if m.message_id not in seen:
            seen.add(m.message_id)
            kept.append(m)
    return kept


@router.post(
    "/checkin",
    response_model=schemas.CheckinAnswer,
    openapi_extra=schemas.body_doc(schemas.CheckinRequest),
)
def checkin(device: CurrentDevice, body: DeviceBody, hub: Hub) -> dict[str, Any]:
    """Record the images in the device's local registry; the database learns the truth here.

    Images the hub never registered cannot be patch sources or targets: they are
    ignored (and listed back), so one foreign image does not block a device's check-in.
    """
    inventory = parse_checkin(body)
    with session_scope(hub.engine) as session:
        ignored = device_images.record_checkin(session, device_id=device.id, inventory=inventory)
    return {"ok": True, "ignored": ignored}


@router.post(
    "/status",
    response_model=schemas.StatusAnswer,
    openapi_extra=schemas.body_doc(schemas.StatusRequest),
)
def status(device: CurrentDevice, body: DeviceBody, hub: Hub) -> dict[str, Any]:
    """Apply status messages (idempotent by message_id): device images, activation outcomes,
    emails, activation of completed deployments."""
    messages = parse_status_batch(body, hub.settings.limits.status_batch_max)
    others = sorted({m.device for m in messages if m.device != device.name})
    if others:
        raise AccessError(f"device {device.name} cannot report for {', '.join(others)}", 403)
    result = handle_status_messages(
        hub.engine,
        messages,
        notifier=hub.notifier,
        store=hub.store,
        manifest_key=manifest_key_path(hub.settings.fleet.keys_dir),
        strict=False,
        retry_policy=hub.retry_policy,
    )
    accepted = [r.message_id for r in result.results if r.outcome != "rejected"]
    rejected = [
        {"message_id": r.message_id, "error": r.error or "rejected"}
        for r in result.results
        if r.outcome == "rejected"
    ]
    return {"accepted": list(dict.fromkeys(accepted)), "rejected": rejected}


@router.get("/bundles", response_model=schemas.BundleList)
def bundles(device: CurrentDevice, hub: Hub) -> dict[str, Any]:
    """The bundles waiting for this device, in download order."""
    with session_scope(hub.engine) as session:
        waiting = offers.waiting_bundles(
            session,
            device=device,
            limit=hub.settings.limits.bundles_listed_max,
            sources_limit=hub.settings.limits.sources_listed_max,
        )
    return {"bundles": waiting}


class ProgressRequest(BaseModel):
    bundle: str = Field(description="the bundle file's digest", pattern=schemas.DIGEST_PATTERN)
    received: int = Field(ge=0, description="bytes of the bundle file on the device")
    size: int = Field(gt=0, description="the bundle's size (must be the hub's)")
    resumed: bool = Field(False, description="first report of a new agent process")


class ProgressAnswer(BaseModel):
    ok: bool
    updated: int = Field(description="device images whose progress was stored")


@router.post(
    "/progress",
    response_model=ProgressAnswer,
    openapi_extra=schemas.body_doc(ProgressRequest),
)
def download_progress(device: CurrentDevice, body: DeviceBody, hub: Hub) -> dict[str, Any]:
    """Store how many bytes of a bundle the device has received (latest wins).

    404 unknown bundle, 403 not sent to this device, 409 nothing in transit with it,
    422 a malformed body or ``received`` outside 0..the bundle's size.
    """
    report = progress.parse_progress(body)
    with session_scope(hub.engine) as session:
        offers.bundle_for_device(session, device=device, digest=report.bundle)
        updated = progress.record_progress(session, device_id=device.id, report=report)
    return {"ok": True, "updated": updated}


@router.post(
    "/runtime",
    response_model=schemas.RuntimeAnswer,
    response_model_exclude_none=True,
    openapi_extra=schemas.body_doc(schemas.RuntimeRequest),
)
def runtime_report(device: CurrentDevice, body: DeviceBody, hub: Hub) -> dict[str, Any]:
    """Store the device's runtime report (latest wins), or answer a heartbeat's digest."""
    parsed = parse_runtime_body(body)
    with session_scope(hub.engine) as session:
        row = queries.get_device(session, device.name)
        if isinstance(parsed, RuntimeHeartbeat):
            return {"known": runtime.heartbeat(session, device=row, digest=parsed.digest)}
        runtime.record_report(session, device=row, report=parsed)
    return {"ok": True, "digest": parsed.digest}


@router.get(
    "/bundles/{digest}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the bundle file"},
        206: {"content": {"application/octet-stream": {}}, "description": "one byte range"},
        410: {
            "model": schemas.ErrorDoc,
            "description": "the bundle file is lost from the hub's store (code: "
            "bundle_missing): permanent for this bundle, skip it; the device image is "
            "marked failed",
        },
        416: {"description": "range starts past the end (Content-Range: bytes */size)"},
    },
)
def bundle(
    digest: str,
    device: CurrentDevice,
    hub: Hub,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    """The bundle file, with single-range support (206, Content-Range, 416)."""
    try:
        check_image_id(digest, "bundle digest")
    except FormatError as exc:
        raise UnknownObjectError(f"unknown bundle {digest[:80]!r}") from exc
    with session_scope(hub.engine) as session:
        found = offers.bundle_for_device(session, device=device, digest=digest)
    try:
        fh = hub.store.open(found.store_key)
    except StorageError as exc:
        if not isinstance(exc.__cause__, FileNotFoundError):
            raise  # unreadable for now: 503, try again later
        return _bundle_missing(hub, device, found)
    try:
        size = fh.seek(0, 2)
        chosen = choose_slice(range_header, size)
    except Unsatisfiable as exc:
        fh.close()
        return Response(status_code=416, headers={"Content-Range": f"bytes */{exc.size}"})
    except BaseException:
        fh.close()
        raise
    return StreamingResponse(
        _stream(fh, chosen, hub.settings.limits.send_piece),
        status_code=206 if chosen.partial else 200,
        media_type="application/octet-stream",
        headers=_bundle_headers(found.digest, chosen),
    )


BUNDLE_MISSING_REASON = "bundle {digest} is missing from the hub's store: rebuild or redeploy"


def _bundle_missing(hub: HubState, device: Device, found: offers.BundleFile) -> Response:
    """410 Gone (``code: bundle_missing``): permanent for this bundle, not "hub down".

    The device images the bundle would have built are marked failed with the reason
    (``status device`` shows it), so the offer leaves the device's list and the set's
    owner hears of it; the message id is fixed per device and bundle, so a retried
    download records it once.
    """
    reason = BUNDLE_MISSING_REASON.format(digest=found.digest)
    log.error("device %s: %s", device.name, reason)
    failures = [
        StatusMessage(
            message_id=f"hub:bundle-missing:{found.digest}:{target}"[:ID_MAX_CHARS],
            device=device.name,
            image_id=target,
            status=ImageStatus.FAILED.value,
            reason=reason,
            deployment=found.deployment,
        )
        for target in found.targets
    ]
    handle_status_messages(
        hub.engine,
        failures,
        notifier=hub.notifier,
        store=hub.store,
        manifest_key=manifest_key_path(hub.settings.fleet.keys_dir),
        strict=False,
        retry_policy=hub.retry_policy,
    )
    body = error_body(StorageError.__name__, reason) | {"code": ErrorCode.BUNDLE_MISSING.value}
    return JSONResponse(body, status_code=410)


def _bundle_headers(digest: str, chosen: Slice) -> dict[str, str]:
    headers = {
        "Content-Length": str(chosen.length),
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        "Cache-Control": "private, max-age=31536000, immutable",
    }
    if chosen.partial:
        headers["Content-Range"] = chosen.content_range
    return headers


def _stream(fh: BinaryIO, chosen: Slice, piece: int) -> Iterator[bytes]:
    """Bytes [start, end) of FH in pieces; the file is closed however the stream ends."""
    try:
        fh.seek(chosen.start)
        left = chosen.length
        while left > 0:
            data = fh.read(min(piece, left))
            if not data:
                return  # the file shrank: the client sees a short body and resumes
            left -= len(data)
            yield data
    finally:
        fh.close()


def manifest_etag(data: bytes) -> str:
    """The ETag of a desired manifest: its sha256, quoted."""
    return '"sha256:' + hashlib.sha256(data).hexdigest() + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names ETAG (weak or strong) or is ``*``."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.get(
    "/desired-manifest",
    responses={
        200: {"content": {"application/json": {}}, "description": "the desired manifest"},
        304: {"description": "unchanged (If-None-Match matched the ETag)"},
    },
)
def desired_manifest(
    device: CurrentDevice,
    hub: Hub,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """The device's newest signed desired manifest (published by activation), with an ETag;
    404 if none."""
    with session_scope(hub.engine) as session:
        published = offers.desired_manifest(
            session, hub.store, device=device, limit=hub.settings.limits.desired_manifest_max
        )
    etag = manifest_etag(published.data)
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(published.data, media_type="application/json", headers={"ETag": etag})
