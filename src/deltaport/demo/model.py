"""The demo's values: what it was asked for, its images and devices, what it found."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deltaport.demo.fleet import AgentFiles, DeviceSetup
from deltaport.demo.images import DemoSizes
from deltaport.demo.link import TcpProxy
from deltaport.demo.mail import Received
from deltaport.demo.outcome import DeviceOutcome
from deltaport.demo.podman import Engine
from deltaport.demo.processes import Child
from deltaport.demo.report import Delivery
from deltaport.demo.services import Registry

DEMO_SIZES = DemoSizes(base=16 << 20, runtime=8 << 20)  # ~5 MB of gzip layers: ~40 s at 1 Mbit/s


@dataclass(frozen=True)
class DemoOptions:
    """What `deltaport demo` was asked for."""

    keep: Path | None = None  # keep every file here (else a temporary folder)
    devices: int = 3
    link_bps: int = 1_000_000  # bits/s of each device's link
    sizes: DemoSizes = DEMO_SIZES
    cut_between: tuple[int, int] = (256 << 10, 2 << 20)  # a link drops after this many bytes
    timeout: float = 900.0  # seconds each wait (check-in, a deployment) may take
    poll_interval: float = 1.0  # seconds between agent passes
    email: bool = True  # run an SMTP server for the requester's email
    fault: str | None = None  # "corrupt-bundle": spoil one device's v1 bundle at the hub
    seed: int | None = None  # seeds where the links drop
    report: Path | None = None  # write the final state here as JSON


@dataclass(frozen=True)
class DemoImage:
    """An image in the cloud registry, as the hub registered it."""

    tag: str  # "v1"
    ref: str  # docker://cloud/demo/app:v1
    name: str  # the hub's name for it: cloud-host/demo/app:v1
    repo_tag: str  # demo/app:v1: what the demo calls it
    image_id: str
    on_device: str  # 127.0.0.1_5000/demo/app:v1: its name in a device registry


@dataclass
class Device:
    """One demo device while the demo runs."""

    setup: DeviceSetup
    registry: Registry
    link: TcpProxy
    files: AgentFiles
    engine: Engine
    agent: Child | None = None

    @property
    def name(self) -> str:
        return self.setup.name


@dataclass
class DemoResult:
    """What the demo delivered and what the requester received."""

    deliveries: list[Delivery] = field(default_factory=list)
    deployments: list[str] = field(default_factory=list)
    emails: list[Received] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    outcomes: list[DeviceOutcome] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # image ID → tag
    rollout: dict[str, Any] | None = None  # the status document of v2's rollout
