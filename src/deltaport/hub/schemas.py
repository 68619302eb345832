"""Shapes of the hub's JSON documents, for the OpenAPI document and for answers.

Request bodies are *parsed* by ``deltaport.fleet.documents`` and
``deltaport.pipelines.manifest`` (one parser each, with limits); the models here
only describe them in ``/openapi.json`` (:func:`body_doc`). Answers are validated
against these models by FastAPI on the way out.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from deltaport.fleet import documents as docs
from deltaport.fleet.states import ActivationOutcome, ModuleHealth, RuntimeStatus
from deltaport.limits import INVENTORY_MAX_IMAGES, TEXT_MAX_CHARS

DIGEST_PATTERN = docs.DIGEST_PATTERN
ImageStatusWord = Literal["present", "failed", "removed"]


class _Open(BaseModel):
    """Unknown fields are ignored by receivers (docs/hub-api.md), so shapes stay open."""

    model_config = ConfigDict(extra="allow")


# --- device API ----------------------------------------------------------------


class InventoryImage(_Open):
    image_id: str = Field(
        description="sha256:… config digest (the image ID)", pattern=DIGEST_PATTERN
    )
    name: str | None = Field(None, description="repository:tag in the device's local registry")


class InventoryDoc(_Open):
    images: list[InventoryImage] = Field(max_length=INVENTORY_MAX_IMAGES)


class CheckinRequest(_Open):
    inventory: InventoryDoc


class CheckinAnswer(BaseModel):
    ok: bool
    ignored: list[str] = Field(
        default_factory=list, description="image IDs listed that the hub never registered"
    )


ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # no control characters


class StatusMessageDoc(_Open):
    message_id: str = Field(
        description="unique per device",
        min_length=1,
        max_length=docs.ID_MAX_CHARS,
        pattern=ID_PATTERN,
    )
    kind: docs.MessageKind | None = Field(None, description="'image' (the default) or 'activation'")
    device: str = Field(
        description="the reporting device's name",
        min_length=1,
        max_length=docs.ID_MAX_CHARS,
        pattern=ID_PATTERN,
    )
    image_id: str | None = Field(
        None, description="image messages: the image ID", pattern=DIGEST_PATTERN
    )
    status: ImageStatusWord | None = Field(None, description="image messages")
    reason: str | None = Field(None, max_length=TEXT_MAX_CHARS, description="cut here")
    deployment: str | None = Field(None, min_length=1, max_length=docs.NAME_MAX_CHARS)
    at: str | None = Field(
        None,
        description="ISO 8601 time; refused if more than "
        f"{docs.DEVICE_TIME_PAST.days} days before or {docs.DEVICE_TIME_AHEAD.days} day(s) "
        "after the hub's clock",
        max_length=64,
    )
    version: int | None = Field(
        None, description="activation: desired manifest version", ge=1, le=docs.VERSION_MAX
    )
    outcome: ActivationOutcome | None = Field(None, description="activation messages")
    module: str | None = Field(
        None, description="activation: the failing module", max_length=docs.NAME_MAX_CHARS
    )
    exit_code: int | None = Field(None, ge=-docs.COUNT_MAX, le=docs.COUNT_MAX)
    restart_count: int | None = Field(None, ge=0, le=docs.COUNT_MAX)
    logs: list[str] | None = Field(
        None,
        description=f"activation: ≤ {docs.LOG_LINES_MAX} lines × {docs.LOG_LINE_MAX_CHARS} chars",
        max_length=docs.LOG_LINES_MAX,
    )


class StatusRequest(_Open):
    messages: list[StatusMessageDoc] = Field(description="at most limits.status_batch_max")


class DeployedDoc(_Open):
    id: str = Field(min_length=1, max_length=docs.NAME_MAX_CHARS)
    version: int = Field(ge=1, le=docs.VERSION_MAX)


class LastAttemptDoc(DeployedDoc):
    outcome: ActivationOutcome
    reason: str | None = None


class ModuleDoc(_Open):
    module: str = Field(min_length=1, max_length=docs.NAME_MAX_CHARS)
    desired_image_id: str | None = Field(None, pattern=DIGEST_PATTERN)
    running_image_id: str | None = Field(None, pattern=DIGEST_PATTERN)
    runtime_status: RuntimeStatus
    health: ModuleHealth | None = None
    exit_code: int | None = None
    restart_count: int | None = None
    started_at: str | None = None
    exited_at: str | None = None
    status_description: str | None = None


class RuntimeReportDoc(_Open):
    deployment: DeployedDoc | None = None
    last_attempt: LastAttemptDoc | None = None
    modules: list[ModuleDoc] = Field(max_length=docs.REPORT_MAX_MODULES)


class RuntimeRequest(_Open):
    report: RuntimeReportDoc | None = Field(None, description="the whole report")
    report_digest: str | None = Field(
        None, description="a heartbeat: sha256:… of the report", pattern=DIGEST_PATTERN
    )


class RuntimeAnswer(BaseModel):
    ok: bool | None = Field(None, description="a report was stored")
    digest: str | None = Field(None, description="the stored report's digest")
    known: bool | None = Field(
        None, description="heartbeat: false when the hub does not hold that report (send it)"
    )


class Rejected(BaseModel):
    message_id: str
    error: str


class StatusAnswer(BaseModel):
    accepted: list[str] = Field(description="ids stored, now or before: do not send again")
    rejected: list[Rejected] = Field(
        default_factory=list, description="ids refused for now (unknown deployment, out of order)"
    )


class BundleOffer(BaseModel):
    digest: str = Field(pattern=DIGEST_PATTERN)
    url: str
    size: int
    deployment: str | None
    priority: int
    target: str | None
    image_id: str
    sources: list[str] = Field(
        default_factory=list, description="image IDs on the device whose layers it reads"
    )


class BundleList(BaseModel):
    bundles: list[BundleOffer]


# --- operator API --------------------------------------------------------------


class DeployRequestDoc(BaseModel):
    manifest: str = Field(description="IoT Edge deployment(.template).json or Compose text")
    devices: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    by: str
    email: str
    vars: dict[str, str] = Field(default_factory=dict, description="values for ${NAME}")
    manifest_name: str = "manifest"
    priority: StrictInt = Field(
        0,
        description="download order on the devices: lower is more urgent (at most ±1000000)",
    )
    unsigned: StrictBool = Field(
        False, description="a hub without a signing key may send unsigned bundles")
    retries: StrictInt | None = Field(
        None, description="automatic retries of a failed delivery (default: the hub's)")


class RegisterImageDoc(BaseModel):
    reference: str = Field(description="e.g. docker://registry/app:v1")
    name: str | None = None
    build_id: str | None = None
    by: str | None = None
    prebuild: bool = Field(
        default=False,
        description="after answering, build every layer's self-contained patch into the "
        "hub's patch cache, so first-image bundles of it cost no compression",
    )


class AddDeviceDoc(BaseModel):
    name: str
    link_rate: str = "1Mbit"
    labels: dict[str, str] = Field(default_factory=dict)
    local_registry: str = "localhost:5000"


class LabelDeviceDoc(BaseModel):
    """``POST /api/v1/devices/{name}/labels``: labels to set and keys to remove."""

    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


AuditActionWord = Literal[
    "image.register", "device.add", "device.report", "deployment.create", "deployment.activate",
    "device_image.retry", "deployment.cancel",  # the dashboard's actions (hub.ui)
    "device.label",
]


class AuditEntryDoc(BaseModel):
    """One operator change (``GET /api/v1/audit``, ``deltaport status audit --json``)."""

    at: str = Field(description="ISO 8601 time, UTC")
    operator: str = Field(description="the operator token's name, or the OS user (local CLI)")
    action: AuditActionWord
    target: str | None = Field(description="device name, deployment id or image name")
    remote: str = Field(description="the client's address, or 'local' (the CLI, no hub)")
    outcome: int = Field(description="HTTP status the hub answered; 0 for a local command")


class ErrorDoc(BaseModel):
    error: str = Field(description="class name from deltaport.errors")
    message: str
    code: str | None = Field(
        None, description="machine-readable cause where one is defined: bundle_missing (410)"
    )


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` describing a JSON request body by MODEL (its $defs inlined)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(schema, defs)}},
        }
    }


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorDoc, "description": text}
    for code, text in (
        (401, "missing or unknown token"),
        (403, "the object belongs to another device"),
        (404, "unknown object"),
        (409, "illegal state change"),
        (422, "malformed body"),
    )
}
