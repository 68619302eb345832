"""A fake container engine implementing the Engine protocol, with behaviours and faults.

For fast, exhaustive tests of the activation transaction; the real adapter is
tested against podman (test_engine_podman.py). Each image ID maps to a behaviour:
what a container created from it does when started.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deltaport.agent.runtime.model import (
    LABEL_DEPLOYMENT,
    LABEL_MODULE,
    LABEL_VERSION,
    Health,
    ModuleObservation,
    ModuleSpec,
    RuntimeStatus,
)
from deltaport.desired import DesiredModule, DesiredState, ManifestKind, encode_envelope
from deltaport.errors import RegistryError

REGISTRY = "127.0.0.1:5000"


class Behaviour(StrEnum):
    OK = "ok"  # runs
    EXITS = "exits"  # exits with code 3 at once
    RESTARTS = "restarts"  # restarts in a loop
    UNHEALTHY = "unhealthy"  # runs, healthcheck fails
    HEALTHY = "healthy"  # runs, healthcheck passes
    BAD_CREATE = "bad_create"  # the engine refuses the create body


class Crash(BaseException):
    """Raised by the fake at the Nth engine call: a SIGKILL of the agent, in effect."""


@dataclass
class Box:
    id: str
    name: str
    labels: dict[str, str]
    image_id: str
    behaviour: Behaviour
    running: bool = False
    started: int = 0
    exit_code: int | None = None


@dataclass
class FakeEngine:
    behaviours: dict[str, Behaviour]
    crash_at: int | None = None  # raise Crash at this call number
    calls: int = 0
    boxes: dict[str, Box] = field(default_factory=dict)
    images: set[str] = field(default_factory=set)
    log: list[str] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def _call(self, what: str) -> None:
        self.calls += 1
        self.log.append(what)
        if self.crash_at is not None and self.calls == self.crash_at:
            raise Crash(what)

    def ensure_image(self, reference: str, image_id: str) -> None:
        self._call(f"ensure {reference}")
        self.images.add(image_id)

    def create(self, spec: ModuleSpec, *, name: str, labels: dict[str, str]) -> str:
        self._call(f"create {name}")
        behaviour = self.behaviours.get(spec.image_id, Behaviour.OK)
        if behaviour is Behaviour.BAD_CREATE:
            raise RegistryError(f"engine refused to create {name}: invalid HostConfig", 400)
        if any(b.name == name for b in self.boxes.values()):
            raise RegistryError(f"name {name} in use", 409)
        box = Box(f"c{next(self._ids)}", name, dict(labels), spec.image_id, behaviour)
        self.boxes[box.id] = box
        return box.id

    def start(self, container_id: str) -> None:
        self._call(f"start {self.boxes[container_id].name}")
        box = self.boxes[container_id]
        box.started += 1
        box.running = box.behaviour is not Behaviour.EXITS
        box.exit_code = 3 if box.behaviour is Behaviour.EXITS else None

    def stop(self, container_id: str, timeout: float) -> None:
        self._call(f"stop {self.boxes[container_id].name}")
        box = self.boxes[container_id]
        box.running, box.exit_code = False, 0

    def remove(self, container_id: str) -> None:
        self._call(f"remove {container_id}")
        self.boxes.pop(container_id, None)

    def observe(self) -> Sequence[ModuleObservation]:
        self._call("observe")
        out = []
        for box in self.boxes.values():
            if box.running and box.behaviour is Behaviour.RESTARTS:
                box.started += 1  # it crashed and was restarted since the last look
            health = {Behaviour.UNHEALTHY: Health.UNHEALTHY, Behaviour.HEALTHY: Health.HEALTHY}
            status = (RuntimeStatus.RUNNING if box.running else
                      RuntimeStatus.FAILED if box.exit_code else RuntimeStatus.STOPPED)
            out.append(ModuleObservation(
                module=box.labels[LABEL_MODULE], container_id=box.id, name=box.name,
                deployment=box.labels[LABEL_DEPLOYMENT], version=int(box.labels[LABEL_VERSION]),
                image_id=box.image_id, status=status, running=box.running,
                exit_code=box.exit_code, restart_count=max(0, box.started - 1),
                started_at=f"t{box.started}" if box.started else None, finished_at=None,
                health=health.get(box.behaviour) if box.running else None))
        return out

    def logs(self, container_id: str, lines: int) -> list[str]:
        self._call("logs")
        return [f"{self.boxes[container_id].name}: line {i}" for i in range(30)][-lines:]

    def probe_health(self, container_id: str) -> Health | None:
        self._call("probe")
        return None

    def remove_image(self, image_id: str) -> None:
        self._call(f"rmi {image_id}")
        self.images.discard(image_id)

    # -- what tests look at ------------------------------------------------------------
    def running_versions(self) -> dict[str, int]:
        """module → version of each running container."""
        return {b.labels[LABEL_MODULE]: int(b.labels[LABEL_VERSION])
                for b in self.boxes.values() if b.running}


@dataclass
class FakeRegistry:
    """What the runtime asks of the local registry: which image a tag names."""

    tags: dict[str, str]  # "repo:tag" → image ID
    host: str = REGISTRY

    def image_id(self, name: str) -> str | None:
        return self.tags.get(name)

    def name_image(self, image_id: str, name: str) -> bool:
        if image_id not in self.tags.values():
            return False
        self.tags[name] = image_id
        return True


def image_id(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def iotedge_state(device: str, version: int, modules: dict[str, str],
                  deployment: str | None = None) -> DesiredState:
    """A desired state of IoT Edge modules {name: image_id}, images at demo/<name>:<id tail>."""
    entries = tuple(DesiredModule(m, f"{REGISTRY}/demo/{m}:{i[-6:]}", i)
                    for m, i in modules.items())
    doc = {"modulesContent": {"$edgeAgent": {"properties.desired": {
        "schemaVersion": "1.1",
        "runtime": {"type": "docker", "settings": {}},
        "systemModules": {},
        "modules": {m.module: {"version": "1.0", "type": "docker", "status": "running",
                               "restartPolicy": "always",
                               "settings": {"image": m.reference, "createOptions": "{}"}}
                    for m in entries}}}}}
    return DesiredState(device=device, version=version,
                        deployment=deployment or f"d-{version}",
                        issued_at="2026-12-02T00:00:00Z", kind=ManifestKind.IOTEDGE,
                        modules=entries, manifest=doc)


def signed(state: DesiredState, key: Ed25519PrivateKey) -> bytes:
    return encode_envelope(state, [key])


def registry_for(*states: DesiredState) -> FakeRegistry:
    return FakeRegistry({m.reference.split("/", 1)[1]: m.image_id
                         for s in states for m in s.modules})
