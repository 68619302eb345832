"""The JSON documents devices send: inventories and status messages. Pure parsing.

Inventory (``deltaport device report NAME INVENTORY.json``, and what the agent sends)::

    {"images": [{"image_id": "sha256:…", "name": "host/app:v1"}, ...]}

Status message (``deltaport event apply MESSAGE.json``, and what the agent sends)::

    {"message_id": "…", "device": "dev-1", "image_id": "sha256:…",
     "status": "present" | "failed" | "removed", "reason": "…",   # reason for failures
     "deployment": "d-…",                                          # optional
     "at": "2026-01-01T00:00:00Z"}                                 # optional

Activation message (docs/device-runtime.md §3), told apart by ``"kind": "activation"``
(no kind, or ``"image"``: the image message above)::

    {"message_id": "…", "kind": "activation", "device": "dev-1", "deployment": "d-…",
     "version": 7, "outcome": "activating" | "active" | "rolled_back" | "failed" | "refused",
     "reason": "…", "module": "app", "exit_code": 3, "restart_count": 0,
     "logs": ["…"], "at": "…"}

A file may hold one message or ``{"messages": [...]}``.

Runtime report (§4), the body of ``POST /api/v1/device/runtime``: ``{"report": {...}}``
or a heartbeat ``{"report_digest": "sha256:…"}``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from deltaport.errors import FormatError
from deltaport.fleet.states import ActivationOutcome, ModuleHealth, RuntimeStatus
from deltaport.limits import INVENTORY_MAX_IMAGES, TEXT_MAX_CHARS

INVENTORY_MAX_BYTES = 2 * 1024 * 1024
MESSAGE_MAX_BYTES = 64 * 1024 * 1024  # a batch file of messages
MESSAGES_MAX_COUNT = 100_000
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
_DIGEST = re.compile(DIGEST_PATTERN)
STATUSES = ("present", "failed", "removed")
NAME_MAX_CHARS = 200  # deployment and module names (as the desired manifest allows)
LOG_LINES_MAX = 20  # lines of a failing module's log in an activation message
LOG_LINE_MAX_CHARS = 500  # each line is cut here
VERSION_MAX = 2**53 - 1  # desired manifest versions (JSON-safe integers)
COUNT_MAX = 2**31 - 1  # exit codes and restart counts
RUNTIME_MAX_BYTES = 1024 * 1024  # a runtime report body
REPORT_MAX_MODULES = 200  # modules in one runtime report
ID_MAX_CHARS = 200  # message ids and device names (the database columns hold 200)
DEVICE_TIME_PAST = timedelta(days=3660)  # a device time this long before the hub's clock…
DEVICE_TIME_AHEAD = timedelta(days=1)  # …or this far after it is refused as nonsense


class MessageKind(StrEnum):
    """What a status message is about (its ``kind``; none means an image)."""

    IMAGE = "image"
    ACTIVATION = "activation"


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
    status: str  # "present" | "failed" | "removed"
    reason: str | None = None
    deployment: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class ActivationMessage:
    """A device's report about activating one deployment set (docs/device-runtime.md §3)."""

    message_id: str
    device: str
    deployment: str
    version: int
    outcome: ActivationOutcome
    reason: str | None = None
    module: str | None = None
    exit_code: int | None = None
    restart_count: int | None = None
    logs: tuple[str, ...] = ()
    at: datetime | None = None

    def detail(self) -> dict[str, Any]:
        """The failing module's facts, as stored in ``device_deployments.detail``."""
        return {
            "module": self.module,
            "exit_code": self.exit_code,
            "restart_count": self.restart_count,
            "logs": list(self.logs),
        }


DeviceMessage = StatusMessage | ActivationMessage


def load_json(data: bytes, what: str) -> Any:
    """DATA decoded as JSON; any way it can fail is a FormatError naming WHAT.

    Besides syntax, that covers an integer of more digits than Python converts
    (ValueError) and nesting deeper than the decoder's recursion limit (RecursionError).
    """
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{what} is not valid JSON: {exc}") from exc
    except ValueError as exc:  # int_max_str_digits
        raise FormatError(f"{what} holds a number too large: {exc}") from exc
    except RecursionError as exc:
        raise FormatError(f"{what} is nested too deeply") from exc


def _load_json(data: bytes, limit: int, what: str) -> Any:
    if len(data) > limit:
        raise FormatError(f"{what} is larger than {limit} bytes")
    return load_json(data, what)


def check_encodable(value: str, where: str) -> str:
    """VALUE if it encodes as UTF-8 (no lone surrogates), else FormatError naming WHERE."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FormatError(f"{where} is not valid Unicode text") from exc
    return value


def _identifier(value: Any, where: str) -> str:
    """A message id or device name: 1-ID_MAX_CHARS printable characters."""
    if not isinstance(value, str) or not value or len(value) > ID_MAX_CHARS:
        raise FormatError(f"{where} must be a string of 1-{ID_MAX_CHARS} characters")
    if not value.isprintable():
        raise FormatError(f"{where} must not hold control characters")
    return check_encodable(value, where)


def check_image_id(value: Any, where: str) -> str:
    """VALUE if it is a sha256 digest string, else FormatError naming WHERE."""
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise FormatError(f"{where}: image_id must be 'sha256:' and 64 hex digits")
    return value


def _text(value: Any, where: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise FormatError(f"{where} must be a non-empty string")
    return check_encodable(value[:TEXT_MAX_CHARS], where)


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


def parse_status_messages(data: bytes) -> tuple[DeviceMessage, ...]:
    """Parse one status message or a ``{"messages": [...]}`` batch (image or activation).

    Raises:
        FormatError: not JSON, too large, or a malformed message (named by index).
    """
    doc = _load_json(data, MESSAGE_MAX_BYTES, "status message")
    items = doc.get("messages") if isinstance(doc, dict) and "messages" in doc else [doc]
    if not isinstance(items, list):
        raise FormatError("'messages' must be a list")
    if len(items) > MESSAGES_MAX_COUNT:
        raise FormatError(f"more than {MESSAGES_MAX_COUNT} messages in one batch")
    return tuple(device_message_from_dict(m, f"message[{i}]") for i, m in enumerate(items))


def device_message_from_dict(item: Any, where: str = "message") -> DeviceMessage:
    """Check and convert one decoded message, image or activation by its ``kind``.

    Raises:
        FormatError: not an object, an unknown kind, or a malformed field.
    """
    if not isinstance(item, dict):
        raise FormatError(f"{where} must be an object")
    kind = item.get("kind", MessageKind.IMAGE.value)
    if kind == MessageKind.ACTIVATION.value:
        return activation_message_from_dict(item, where)
    if kind != MessageKind.IMAGE.value:
        raise FormatError(f"{where}.kind must be one of {', '.join(MessageKind)}")
    return status_message_from_dict(item, where)


def activation_message_from_dict(item: Any, where: str = "message") -> ActivationMessage:
    """Check and convert one decoded activation message.

    Raises:
        FormatError: a missing or malformed field, more than LOG_LINES_MAX log lines.
    """
    if not isinstance(item, dict):
        raise FormatError(f"{where} must be an object")
    return ActivationMessage(
        message_id=_identifier(item.get("message_id"), f"{where}.message_id"),
        device=_identifier(item.get("device"), f"{where}.device"),
        deployment=_name(item.get("deployment"), f"{where}.deployment"),
        version=_int(item.get("version"), f"{where}.version", 1, VERSION_MAX),
        outcome=_enum(ActivationOutcome, item.get("outcome"), f"{where}.outcome"),
        reason=_text(item.get("reason"), f"{where}.reason", required=False),
        module=_optional_name(item.get("module"), f"{where}.module"),
        exit_code=_optional_int(item.get("exit_code"), f"{where}.exit_code", -COUNT_MAX),
        restart_count=_optional_int(item.get("restart_count"), f"{where}.restart_count", 0),
        logs=_logs(item.get("logs"), f"{where}.logs"),
        at=_parse_time(item.get("at"), f"{where}.at"),
    )


def status_message_from_dict(item: Any, where: str = "message") -> StatusMessage:
    """Check and convert one decoded image status message."""
    if not isinstance(item, dict):
        raise FormatError(f"{where} must be an object")
    status = item.get("status")
    if status not in STATUSES:
        raise FormatError(f"{where}.status must be one of {', '.join(STATUSES)}")
    return StatusMessage(
        message_id=_identifier(item.get("message_id"), f"{where}.message_id"),
        device=_identifier(item.get("device"), f"{where}.device"),
        image_id=check_image_id(item.get("image_id"), where),
        status=status,
        reason=_text(item.get("reason"), f"{where}.reason", required=False),
        deployment=_text(item.get("deployment"), f"{where}.deployment", required=False),
        at=_parse_time(item.get("at"), f"{where}.at"),
    )


def _parse_time(value: Any, where: str) -> datetime | None:
    """A device's time, within DEVICE_TIME_PAST before and DEVICE_TIME_AHEAD after now."""
    parsed = _iso_time(value, where)
    return None if parsed is None else check_device_time(parsed, where)


def _iso_time(value: Any, where: str) -> datetime | None:
    """VALUE as an aware UTC time (naive means UTC), unbounded; None for None."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise FormatError(f"{where} must be an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise FormatError(f"{where} must be an ISO 8601 time between years 1 and 9999") from exc


def check_device_time(at: datetime, where: str, now: datetime | None = None) -> datetime:
    """AT if it lies within the window around NOW (the hub's clock) a device may report.

    Raises:
        FormatError: earlier than DEVICE_TIME_PAST before NOW or later than
            DEVICE_TIME_AHEAD after it (a device clock that is plainly wrong).
    """
    now = now or datetime.now(UTC)
    if not now - DEVICE_TIME_PAST <= at <= now + DEVICE_TIME_AHEAD:
        raise FormatError(
            f"{where} {at.isoformat()} is more than {DEVICE_TIME_PAST.days} days before or "
            f"{DEVICE_TIME_AHEAD.days} day(s) after the hub's clock"
        )
    return at


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > NAME_MAX_CHARS:
        raise FormatError(f"{where} must be a string of 1-{NAME_MAX_CHARS} characters")
    return check_encodable(value, where)


def _optional_name(value: Any, where: str) -> str | None:
    return None if value is None else _name(value, where)


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FormatError(f"{where} must be an integer from {low} to {high}")
    return int(value)


E = TypeVar("E", bound=StrEnum)


def _enum(cls: type[E], value: Any, where: str) -> E:
    if isinstance(value, str):
        for member in cls:
            if member.value == value:
                return member
    raise FormatError(f"{where} must be one of {', '.join(cls)}")


def _optional_int(value: Any, where: str, low: int) -> int | None:
    return None if value is None else _int(value, where, low, COUNT_MAX)


def _logs(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > LOG_LINES_MAX:
        raise FormatError(f"{where} must be a list of at most {LOG_LINES_MAX} lines")
    if not all(isinstance(line, str) for line in value):
        raise FormatError(f"{where} must hold only strings")
    return tuple(check_encodable(line[:LOG_LINE_MAX_CHARS], where) for line in value)


# --- runtime reports ------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentRef:
    """A deployment set at one desired-manifest version, as a report names it."""

    deployment: str
    version: int


@dataclass(frozen=True)
class LastAttempt:
    """The last activation a device tried, and how it ended."""

    deployment: str
    version: int
    outcome: ActivationOutcome
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As stored in ``devices.runtime_last_attempt`` and shown by ``status device``."""
        return {
            "id": self.deployment,
            "version": self.version,
            "outcome": self.outcome.value,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ModuleReport:
    """One module as the runtime report shows it: what it should run, what runs."""

    module: str
    desired_image_id: str | None
    running_image_id: str | None
    runtime_status: RuntimeStatus
    health: ModuleHealth | None = None
    exit_code: int | None = None
    restart_count: int | None = None
    started_at: datetime | None = None
    exited_at: datetime | None = None
    status_description: str | None = None


@dataclass(frozen=True)
class RuntimeReport:
    """A device's whole runtime report, and the digest its heartbeats will carry."""

    digest: str
    deployment: DeploymentRef | None
    last_attempt: LastAttempt | None
    modules: tuple[ModuleReport, ...]


@dataclass(frozen=True)
class RuntimeHeartbeat:
    """``{"report_digest": …}``: nothing changed since the report with this digest."""

    digest: str


def report_digest(report: Any) -> str:
    """sha256 of the canonical JSON of REPORT as received (sorted keys, no spaces).

    The agent computes the same over what it sent, so a heartbeat's digest matches
    exactly when the hub holds that report.
    """
    data = json.dumps(report, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_runtime_body(data: bytes) -> RuntimeReport | RuntimeHeartbeat:
    """The body of ``POST /runtime``: a whole report or a heartbeat.

    Raises:
        FormatError: not JSON, larger than RUNTIME_MAX_BYTES, neither shape, or a
            malformed report (more than REPORT_MAX_MODULES modules, a module twice…).
    """
    doc = _load_json(data, RUNTIME_MAX_BYTES, "runtime report")
    if isinstance(doc, dict) and "report" in doc:
        return runtime_report_from_dict(doc["report"])
    if isinstance(doc, dict) and "report_digest" in doc:
        digest = doc["report_digest"]
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise FormatError("report_digest must be 'sha256:' and 64 hex digits")
        return RuntimeHeartbeat(digest)
    raise FormatError("runtime body must be {'report': {...}} or {'report_digest': 'sha256:…'}")


def runtime_report_from_dict(report: Any) -> RuntimeReport:
    """Check and convert one decoded runtime report.

    Raises:
        FormatError: a missing or malformed field.
    """
    if not isinstance(report, dict):
        raise FormatError("runtime report must be an object")
    modules = report.get("modules")
    if not isinstance(modules, list) or len(modules) > REPORT_MAX_MODULES:
        raise FormatError(f"report.modules must be a list of at most {REPORT_MAX_MODULES}")
    parsed = tuple(_module_report(m, f"report.modules[{i}]") for i, m in enumerate(modules))
    if len({m.module for m in parsed}) != len(parsed):
        raise FormatError("report.modules names a module twice")
    return RuntimeReport(
        digest=report_digest(report),
        deployment=_deployment_ref(report.get("deployment"), "report.deployment"),
        last_attempt=_last_attempt(report.get("last_attempt"), "report.last_attempt"),
        modules=parsed,
    )


def _deployment_ref(value: Any, where: str) -> DeploymentRef | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise FormatError(f"{where} must be an object or null")
    return DeploymentRef(
        _name(value.get("id"), f"{where}.id"),
        _int(value.get("version"), f"{where}.version", 1, VERSION_MAX),
    )


def _last_attempt(value: Any, where: str) -> LastAttempt | None:
    ref = _deployment_ref(value, where)
    if ref is None:
        return None
    outcome = _enum(ActivationOutcome, value.get("outcome"), f"{where}.outcome")
    reason = _text(value.get("reason"), f"{where}.reason", required=False)
    return LastAttempt(ref.deployment, ref.version, outcome, reason or None)


def _optional_digest(value: Any, where: str) -> str | None:
    return None if value is None else check_image_id(value, where)


def _module_report(item: Any, where: str) -> ModuleReport:
    if not isinstance(item, dict):
        raise FormatError(f"{where} must be an object")
    health = item.get("health")
    return ModuleReport(
        module=_name(item.get("module"), f"{where}.module"),
        desired_image_id=_optional_digest(item.get("desired_image_id"), f"{where}.desired"),
        running_image_id=_optional_digest(item.get("running_image_id"), f"{where}.running"),
        runtime_status=_enum(RuntimeStatus, item.get("runtime_status"), f"{where}.runtime_status"),
        health=_enum(ModuleHealth, health, f"{where}.health") if health is not None else None,
        exit_code=_optional_int(item.get("exit_code"), f"{where}.exit_code", -COUNT_MAX),
        restart_count=_optional_int(item.get("restart_count"), f"{where}.restart_count", 0),
        started_at=_engine_time(item.get("started_at"), f"{where}.started_at"),
        exited_at=_engine_time(item.get("exited_at"), f"{where}.exited_at"),
        status_description=_text(
            item.get("status_description"), f"{where}.status_description", required=False
        ),
    )


def _engine_time(value: Any, where: str) -> datetime | None:
    """An engine's timestamp; Docker's zero time (year 1: never) is None.

    Not bounded to the device window: a container may have started long ago.
    """
    if isinstance(value, str) and value.startswith("0001-"):
        return None
    parsed = _iso_time(value, where)
    return None if parsed is None or parsed.year <= 1 else parsed
