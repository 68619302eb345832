"""The words of the device runtime: module specs, what the engine shows, settings.

Pure values only. ``specs`` turns a verified desired manifest into :class:`ModuleSpec`;
``engine`` performs them in a Docker-API engine and reads back
:class:`ModuleObservation`; ``gate`` judges observations; ``activation`` sequences it
all. States use edgeAgent's ``runtimeStatus`` words so IoT Edge users need no glossary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

LABEL_MANAGED = "io.deltaport.managed"
LABEL_DEPLOYMENT = "io.deltaport.deployment"
LABEL_VERSION = "io.deltaport.version"
LABEL_MODULE = "io.deltaport.module"
LOG_LINES = 20  # lines of a failing module's log sent to the hub
LOG_LINE_CHARS = 500  # each cut to this


class RuntimeKind(StrEnum):
    """How the device runs modules (``[runtime] kind`` in agent.toml)."""

    ENGINE = "engine"  # the agent drives a Docker-API engine itself
    FILE = "file"  # the agent writes the desired manifest for an external runtime
    NONE = "none"  # images only; nothing is run


class RuntimeStatus(StrEnum):
    """edgeAgent's runtimeStatus words."""

    UNKNOWN = "unknown"
    BACKOFF = "backoff"  # restarting, or waiting to be restarted
    RUNNING = "running"
    STOPPED = "stopped"  # exited with code 0, or created and not started
    FAILED = "failed"  # exited with a non-zero code, or the engine failed it


class Health(StrEnum):
    """A container's healthcheck status (None where no healthcheck is defined)."""

    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class DesiredStatus(StrEnum):
    """Whether a module should be running (IoT Edge ``status``)."""

    RUNNING = "running"
    STOPPED = "stopped"


class RestartPolicy(StrEnum):
    """IoT Edge ``restartPolicy`` (Compose ``restart`` maps onto it)."""

    NEVER = "never"
    ON_FAILURE = "on-failure"
    ON_UNHEALTHY = "on-unhealthy"
    ALWAYS = "always"


@dataclass(frozen=True)
class ModuleSpec:
    """One container to create, fully decided before anything touches the engine."""

    module: str
    image: str  # device-local reference the manifest names ("127.0.0.1:5000/demo/app:v2")
    image_id: str  # the config digest the signed manifest requires
    create_body: dict[str, Any] = field(hash=False, compare=False)
    # ^ a Docker Engine API ContainerCreate body, without Image (set by the engine
    #   driver to the verified image ID) and without deltaport's labels (added by it)
    desired_status: DesiredStatus = DesiredStatus.RUNNING
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    startup_order: int = 4294967295  # IoT Edge default: last; lower starts first


@dataclass(frozen=True)
class ModuleObservation:
    """One deltaport-managed container as the engine shows it now."""

    module: str
    container_id: str
    name: str
    deployment: str
    version: int
    image_id: str  # the image the container was created from
    status: RuntimeStatus
    running: bool
    exit_code: int | None
    restart_count: int
    started_at: str | None  # ISO 8601 as the engine gives it; None if never started
    finished_at: str | None
    health: Health | None  # None: no healthcheck
    description: str = ""  # engine's State.Error / OOMKilled / status text


class Engine(Protocol):
    """What the activation needs of a container engine (DockerEngine; fakes in tests).

    Every method raises ``deltaport.errors.TransferError`` when the engine cannot be
    reached and ``RegistryError`` when it refuses.
    """

    def ensure_image(self, reference: str, image_id: str) -> None:
        """Make the engine hold IMAGE_ID, pulled by digest from the local registry.

        Raises IntegrityError when what it got is not IMAGE_ID.
        """

    def create(self, spec: ModuleSpec, *, name: str, labels: dict[str, str]) -> str:
        """Create (not start) the container; returns its id."""

    def start(self, container_id: str) -> None: ...

    def stop(self, container_id: str, timeout: float) -> None: ...

    def remove(self, container_id: str) -> None:
        """Remove the container (stopping it first if needed); gone already is fine."""

    def observe(self) -> Sequence[ModuleObservation]:
        """Every container labelled ``io.deltaport.managed=true``."""

    def logs(self, container_id: str, lines: int) -> list[str]:
        """The last LINES lines of stdout+stderr, each cut to LOG_LINE_CHARS."""

    def probe_health(self, container_id: str) -> Health | None:
        """Run the container's healthcheck once now (for engines that do not schedule
        healthchecks themselves, e.g. podman without systemd); None: none defined."""

    def remove_image(self, image_id: str) -> None:
        """Remove the image from the engine; in use or gone already is fine."""


@dataclass(frozen=True)
class RuntimeSettings:
    """The ``[runtime]`` table of agent.toml."""

    kind: RuntimeKind = RuntimeKind.NONE
    docker_host: str | None = None  # "unix:///run/podman/podman.sock"
    manifest_keys: tuple[Path, ...] = ()  # public keys trusted to sign desired manifests
    desired_file: Path | None = None  # kind=file: where the desired manifest is written
    health_window: float = 60.0  # seconds every module must stay up (and healthy)
    health_grace: float = 120.0  # extra seconds to get there (image pulls, start periods)
    health_poll: float = 1.0  # seconds between engine observations during the gate
    stop_timeout: float = 10.0  # seconds a container gets to stop before SIGKILL
    max_interruptions: int = 3  # agent restarts during one activation before it is failed
    heartbeat_interval: float = 6 * 3600.0  # seconds between unchanged-report heartbeats
    keep_free: float = 0.20  # fraction of the registry's file system kept free
    registry_root: Path | None = None  # the local registry's storage (for free space, GC)
    registry_gc_command: tuple[str, ...] = ()  # runs the registry's garbage-collect safely
