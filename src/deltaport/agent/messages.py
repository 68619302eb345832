"""The documents the agent sends, built purely from values (shapes: deltaport.fleet.documents).

A status message here lacks its ``message_id``: the outbox mints it when it enqueues
the message (``AgentState.record``), exactly once. Extra fields (``target``,
``bundle``, ``bytes``, ``timings``) ride along; the hub's parser ignores unknown keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from deltaport.limits import TEXT_MAX_CHARS


@dataclass(frozen=True)
class LocalImage:
    """One tag in the device's local registry and the image it names."""

    name: str  # "demo/app:v1" (repository:tag, without the registry host)
    image_id: str  # the config digest


def now_iso() -> str:
    """The current time as ISO 8601 UTC, the ``at`` of a status message."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def inventory_document(images: Iterable[LocalImage]) -> dict[str, Any]:
    """``{"images": [{"image_id", "name"}, ...]}``, sorted so equal inventories compare equal."""
    entries = sorted({(i.name, i.image_id) for i in images})
    return {"images": [{"image_id": image_id, "name": name} for name, image_id in entries]}


def success_message(device: str, image_id: str, *, target: str, deployment: str | None,
                    bundle: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """A ``present`` status message with timings and byte counts in ``extra``."""
    message: dict[str, Any] = {
        "device": device, "image_id": image_id, "status": "present", "at": now_iso(),
        "target": target, "bundle": bundle, **extra,
    }
    if deployment:
        message["deployment"] = deployment
    return message


def failure_message(device: str, image_id: str, reason: str, *, target: str | None,
                    deployment: str | None, bundle: str) -> dict[str, Any]:
    """A ``failed`` status message; the reason is cut to what the hub stores."""
    message: dict[str, Any] = {
        "device": device, "image_id": image_id, "status": "failed", "at": now_iso(),
        "reason": reason[:TEXT_MAX_CHARS], "bundle": bundle,
    }
    if target:
        message["target"] = target
    if deployment:
        message["deployment"] = deployment
    return message
