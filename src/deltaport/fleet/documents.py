"""The JSON documents devices send: inventories and status messages. Pure parsing.

Inventory (``deltaport device report NAME INVENTORY.json``, and what the agent sends)::

    {"images": [{"image_id": "sha256:…", "name": "host/app:v1"}, ...]}

Status message (``deltaport event apply MESSAGE.json``, and what the agent sends)::

    {"message_id": "…", "device": "dev-1", "image_id": "sha256:…",
     "status": "present" | "failed", "reason": "…",        # reason for failures
     "deployment": "d-…",                                    # optional
     "at": "2026-01-01T00:00:00Z"}                           # optional

A file may hold one message or ``{"messages": [...]}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from deltaport.errors import FormatError

INVENTORY_MAX_BYTES = 2 * 1024 * 1024
INVENTORY_MAX_IMAGES = 10_000
MESSAGE_MAX_BYTES = 64 * 1024 * 1024  # a batch file of messages
MESSAGES_MAX_COUNT = 100_000
TEXT_MAX_CHARS = 4000  # failure reasons and names are cut here
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
STATUSES = ("present", "failed")


@dataclass(frozen=True)
class InventoryEntry:
    """One image a device says it has."""

    image_id: str
    name: str | None = None


@dataclass(frozen=True)
class Inventory:
    """Everything a device says it has right now."""

    images: tuple[InventoryEntry, ...]

    @property
    def image_ids(self) -> frozenset[str]:
        """The content identities listed."""
        return frozenset(e.image_id for e in self.images)


@dataclass(frozen=True)
class StatusMessage:
    """A device's report about one image."""

    message_id: str
    device: str
    image_id: str
    status: str  # "present" | "failed"
    reason: str | None = None
    deployment: str | None = None
    at: datetime | None = None


def _load_json(data: bytes, limit: int, what: str) -> Any:
    if len(data) > limit:
        raise FormatError(f"{what} is larger than {limit} bytes")
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{what} is not valid JSON: {exc}") from exc


def check_image_id(value: Any, where: str) -> str:
    """VALUE if it is a sha256 digest string, else FormatError naming WHERE."""
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise FormatError(f"{where}: image_id must be 'sha256:' and 64 hex digits")
    return value


def _text(value: Any, where: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise FormatError(f"{where} must be a non-empty string")
    return value[:TEXT_MAX_CHARS]


def parse_inventory(data: bytes) -> Inventory:
    """Parse an inventory document.

    Raises:
        FormatError: not JSON, too large, too many images, or a malformed entry.
    """
    doc = _load_json(data, INVENTORY_MAX_BYTES, "inventory")
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list):
        raise FormatError("inventory must be an object with an 'images' list")
    if len(images) > INVENTORY_MAX_IMAGES:
        raise FormatError(f"inventory lists more than {INVENTORY_MAX_IMAGES} images")
    entries = []
    for i, item in enumerate(images):
        where = f"inventory images[{i}]"
        if not isinstance(item, dict):
            raise FormatError(f"{where} must be an object")
        name = _text(item.get("name"), f"{where}.name", required=False)
        entries.append(InventoryEntry(check_image_id(item.get("image_id"), where), name))
    return Inventory(tuple(entries))


def parse_status_messages(data: bytes) -> tuple[StatusMessage, ...]:
    """Parse one status message or a ``{"messages": [...]}`` batch.

    Raises:
        FormatError: not JSON, too large, or a malformed message (named by index).
    """
    doc = _load_json(data, MESSAGE_MAX_BYTES, "status message")
    items = doc.get("messages") if isinstance(doc, dict) and "messages" in doc else [doc]
    if not isinstance(items, list):
        raise FormatError("'messages' must be a list")
    if len(items) > MESSAGES_MAX_COUNT:
        raise FormatError(f"more than {MESSAGES_MAX_COUNT} messages in one batch")
    return tuple(status_message_from_dict(m, f"message[{i}]") for i, m in enumerate(items))


def status_message_from_dict(item: Any, where: str = "message") -> StatusMessage:
    """Check and convert one decoded status message."""
    if not isinstance(item, dict):
        raise FormatError(f"{where} must be an object")
    status = item.get("status")
    if status not in STATUSES:
        raise FormatError(f"{where}.status must be one of {', '.join(STATUSES)}")
    return StatusMessage(
        message_id=str(_text(item.get("message_id"), f"{where}.message_id")),
        device=str(_text(item.get("device"), f"{where}.device")),
        image_id=check_image_id(item.get("image_id"), where),
        status=status,
        reason=_text(item.get("reason"), f"{where}.reason", required=False),
        deployment=_text(item.get("deployment"), f"{where}.deployment", required=False),
        at=_parse_time(item.get("at"), f"{where}.at"),
    )


def _parse_time(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FormatError(f"{where} must be an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise FormatError(f"{where} must be an ISO 8601 time") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
