"""Runtime reports (docs/device-runtime.md §4): what each device runs, latest wins.

Keyword-only functions over a Session (the caller owns the transaction). A report
replaces the device's ``device_modules`` rows and its ``devices.runtime_*`` columns;
a heartbeat only says the device is alive and still runs what the report with that
digest said.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from deltaport.fleet.documents import ModuleReport, RuntimeReport
from deltaport.fleet.models import Device, DeviceModule, utcnow


def record_report(
    session: Session, *, device: Device, report: RuntimeReport, at: datetime | None = None
) -> None:
    """Make the database hold REPORT as DEVICE's runtime (replacing the previous one)."""
    now = at or utcnow()
    running = report.deployment
    session.execute(delete(DeviceModule).where(DeviceModule.device_id == device.id))
    if report.modules:
        session.execute(
            insert(DeviceModule),
            [_module_row(device.id, m, running.deployment if running else None, now)
             for m in report.modules],
        )
    device.runtime_digest = report.digest
    device.runtime_deployment_set_id = running.deployment if running else None
    device.runtime_version = running.version if running else None
    attempt = report.last_attempt
    device.runtime_last_attempt = attempt.to_json() if attempt is not None else None
    device.runtime_reported_at = now
    device.last_seen = now
    session.flush()


def _module_row(
    device_id: int, m: ModuleReport, deployment: str | None, now: datetime
) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "module": m.module,
        "deployment_set_id": deployment,
        "desired_image_id": m.desired_image_id,
        "running_image_id": m.running_image_id,
        "runtime_status": m.runtime_status.value,
        "health": m.health.value if m.health is not None else None,
        "exit_code": m.exit_code,
        "restart_count": m.restart_count,
        "started_at": m.started_at,
        "exited_at": m.exited_at,
        "status_description": m.status_description,
        "updated_at": now,
    }


def heartbeat(session: Session, *, device: Device, digest: str, at: datetime | None = None) -> bool:
    """Record that DEVICE is alive; True if the hub holds the report with DIGEST.

    Only a known digest moves ``runtime_reported_at`` (the report is confirmed as
    current); ``last_seen`` moves either way.
    """
    now = at or utcnow()
    known = device.runtime_digest == digest
    device.last_seen = now
    if known:
        device.runtime_reported_at = now
    session.flush()
    return known


def device_modules(session: Session, *, device_id: int) -> list[DeviceModule]:
    """The modules of the device's latest runtime report, by name."""
    return list(
        session.scalars(
            select(DeviceModule)
            .where(DeviceModule.device_id == device_id)
            .order_by(DeviceModule.module)
        )
    )
