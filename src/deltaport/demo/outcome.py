"""What runs on each demo device at the end, proven by its container engine, and the report.

The demo does not take the agent's word for what runs: it asks each device's engine
itself (the docker SDK over the device's podman socket) which deltaport containers
exist, from which image, in which state. It asks the hub what became of every
deployment on every device. Both go into the final table and ``--report FILE``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table

from deltaport.agent.runtime.model import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED,
    LABEL_MODULE,
    LABEL_VERSION,
)
from deltaport.errors import TransferError


@dataclass(frozen=True)
class RunningModule:
    """One deltaport container as the engine shows it."""

    name: str  # the module
    container: str  # the container's name
    image_id: str
    state: str  # the engine's State.Status: running, exited, …
    healthy: bool | None  # None: no healthcheck result
    deployment: str
    version: int


@dataclass(frozen=True)
class DeploymentOutcome:
    """What became of one deployment on one device, as the hub recorded it."""

    id: str
    image: str  # the tag it deployed
    state: str  # active, rolled_back, failed, refused, activating, delivered, …
    reason: str = ""


@dataclass(frozen=True)
class DeviceOutcome:
    """One device at the end of the demo."""

    name: str
    modules: tuple[RunningModule, ...]
    deployment: DeploymentOutcome | None  # what it runs at the end
    deployments: tuple[DeploymentOutcome, ...] = field(default=())  # every one it was given


def engine_modules(docker_host: str) -> tuple[RunningModule, ...]:
    """Every deltaport-labelled container of the engine at DOCKER_HOST.

    Raises:
        TransferError: the engine cannot be reached or answers with an error.
    """
    import docker  # the SDK is a device-side dependency: imported when used
    import docker.errors

    try:
        client = docker.DockerClient(base_url=docker_host, timeout=60)
        try:
            found = client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=true"})
            return tuple(sorted((_module(c.attrs) for c in found), key=lambda m: m.name))
        finally:
            client.close()
    except (docker.errors.DockerException, OSError) as exc:
        raise TransferError(f"engine {docker_host}: {exc}") from exc


def _module(attrs: Mapping[str, Any]) -> RunningModule:
    labels = attrs.get("Config", {}).get("Labels") or {}
    state = attrs.get("State", {})
    health = (state.get("Health") or state.get("Healthcheck") or {}).get("Status")
    return RunningModule(
        name=str(labels.get(LABEL_MODULE, "?")), container=str(attrs.get("Name", "")).lstrip("/"),
        image_id=str(attrs.get("Image", "")), state=str(state.get("Status", "unknown")),
        healthy={"healthy": True, "unhealthy": False}.get(str(health)),
        deployment=str(labels.get(LABEL_DEPLOYMENT, "")),
        version=int(labels.get(LABEL_VERSION, 0) or 0))


def rollout_summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The rollout part of the report: its state, why, and each wave's outcome (pure)."""
    return {
        "id": doc["rollout"],
        "deployment": doc["deployment"],
        "state": doc["state"],
        "reason": doc.get("reason"),
        "waves": [{k: w[k] for k in ("wave", "devices", "delivered", "active", "failed",
                                     "started")} for w in doc["waves"]],
    }


def rollout_line(doc: Mapping[str, Any]) -> str:
    """``rollout r-…: complete; wave 1 dev-a: 1/1 active; wave 2 …`` for the console."""
    waves = "; ".join(f"wave {w['wave']} {', '.join(w['devices'])}: {w['active']}/"
                      f"{len(w['devices'])} active" + (f", {w['failed']} failed"
                                                       if w["failed"] else "")
                      for w in doc["waves"])
    return f"rollout {doc['rollout']}: {doc['state']}; {waves}"


def report_document(devices: Sequence[DeviceOutcome], ok: bool,
                    problems: Sequence[str] = (),
                    rollout: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``--report FILE`` document (pure)."""
    return {
        "ok": ok,
        "problems": list(problems),
        "rollout": rollout_summary(rollout) if rollout is not None else None,
        "devices": [
            {
                "name": d.name,
                "modules": [{**asdict(m), "healthy": m.healthy} for m in d.modules],
                "deployment": asdict(d.deployment) if d.deployment is not None else None,
                "deployments": [asdict(x) for x in d.deployments],
            }
            for d in devices
        ],
    }


def runtime_table(devices: Sequence[DeviceOutcome], tags: Mapping[str, str]) -> Table:
    """Per device: what runs (by the engine), and what became of each deployment."""
    table = Table(title="what runs on each device (asked of its container engine)")
    for column in ("device", "module", "image running", "state", "health", "deployments"):
        table.add_column(column)
    for d in devices:
        history = "\n".join(f"{x.image}: {x.state}" + (f" ({x.reason})" if x.reason else "")
                            for x in d.deployments)
        if not d.modules:
            table.add_row(d.name, "-", "-", "nothing runs", "-", history)
        for k, m in enumerate(d.modules):
            health = {True: "healthy", False: "unhealthy", None: "-"}[m.healthy]
            table.add_row(d.name if k == 0 else "", m.name,
                          f"{tags.get(m.image_id, '?')} ({m.image_id[7:19]})", m.state, health,
                          history if k == 0 else "")
    return table
