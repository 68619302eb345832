"""Shapes of the hub's JSON documents, for the OpenAPI document and for answers.

Request bodies are *parsed* by ``deltaport.fleet.documents`` and
``deltaport.pipelines.manifest`` (one parser each, with limits); the models here
only describe them in ``/openapi.json`` (:func:`body_doc`). Answers are validated
against these models by FastAPI on the way out.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class _Open(BaseModel):
    """Unknown fields are ignored by receivers (docs/hub-api.md), so shapes stay open."""

    model_config = ConfigDict(extra="allow")


# --- device API ----------------------------------------------------------------


class InventoryImage(_Open):
    image_id: str = Field(description="sha256:… config digest (the image ID)")
    name: str | None = Field(None, description="repository:tag in the device's local registry")


class InventoryDoc(_Open):
    images: list[InventoryImage]


class CheckinRequest(_Open):
    inventory: InventoryDoc


class CheckinAnswer(BaseModel):
    ok: bool
    ignored: list[str] = Field(
        default_factory=list, description="image IDs listed that the hub never registered"
    )


class StatusMessageDoc(_Open):
    message_id: str
    device: str
    image_id: str
    status: str = Field(description="present | failed")
    reason: str | None = None
    deployment: str | None = None
    at: str | None = Field(None, description="ISO 8601 time")


class StatusRequest(_Open):
    messages: list[StatusMessageDoc]


class Rejected(BaseModel):
    message_id: str
    error: str


class StatusAnswer(BaseModel):
    accepted: list[str] = Field(description="ids stored, now or before: do not send again")
    rejected: list[Rejected] = Field(
        default_factory=list, description="ids refused for now (unknown deployment, out of order)"
    )


class BundleOffer(BaseModel):
    digest: str
    url: str
    size: int
    deployment: str | None
    priority: int
    target: str | None
    image_id: str


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


class ErrorDoc(BaseModel):
    error: str = Field(description="class name from deltaport.errors")
    message: str


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
