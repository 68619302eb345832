"""The runtime documents the agent sends (docs/device-runtime.md §3, §4). Pure.

Activation messages go through the durable outbox with the image status messages
(the outbox mints ``message_id``). The runtime report is a snapshot: only the newest
matters, and an unchanged one costs only its digest in a heartbeat.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from deltaport.agent.runtime.model import LOG_LINE_CHARS, LOG_LINES, ModuleObservation
from deltaport.agent.runtime.policy import Attempt, Deployed, Outcome
from deltaport.limits import TEXT_MAX_CHARS


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def activation_message(device: str, deployment: str, version: int, outcome: Outcome, *,
                       reason: str = "", failing: ModuleObservation | None = None,
                       logs: Sequence[str] = ()) -> dict[str, Any]:
    """An ``activation`` status message; the failing module's facts when there is one."""
    message: dict[str, Any] = {
        "kind": "activation", "device": device, "deployment": deployment, "version": version,
        "outcome": outcome.value, "at": now_iso(),
    }
    if reason:
        message["reason"] = reason[:TEXT_MAX_CHARS]
    if failing is not None:
        message.update(module=failing.module, exit_code=failing.exit_code,
                       restart_count=failing.restart_count)
    if logs:
        message["logs"] = [line[:LOG_LINE_CHARS] for line in list(logs)[-LOG_LINES:]]
    return message


def module_entry(observation: ModuleObservation | None, module: str,
                 desired_image_id: str | None) -> dict[str, Any]:
    """One module of the runtime report: desired vs what the engine shows."""
    if observation is None:
        return {"module": module, "desired_image_id": desired_image_id,
                "running_image_id": None, "runtime_status": "unknown", "health": None,
                "exit_code": None, "restart_count": 0, "started_at": None, "exited_at": None,
                "status_description": "no container"}
    return {
        "module": module,
        "desired_image_id": desired_image_id,
        "running_image_id": observation.image_id if observation.running else None,
        "runtime_status": observation.status.value,
        "health": observation.health.value if observation.health is not None else None,
        "exit_code": observation.exit_code,
        "restart_count": observation.restart_count,
        "started_at": observation.started_at,
        "exited_at": observation.finished_at,
        "status_description": observation.description[:LOG_LINE_CHARS],
    }


def runtime_report(running: Deployed | None, last: Attempt | None,
                   desired_images: Mapping[str, str],
                   observed: Mapping[str, ModuleObservation]) -> dict[str, Any]:
    """The report of what runs: every module the running deployment names."""
    modules = [module_entry(observed.get(m), m, image_id)
               for m, image_id in sorted(desired_images.items())]
    return {
        "deployment": running.to_json() if running is not None else None,
        "last_attempt": last.to_json() if last is not None else None,
        "modules": modules,
    }


def report_digest(report: Mapping[str, Any]) -> str:
    """sha256 of the canonical report JSON (what a heartbeat carries)."""
    data = json.dumps(report, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()
