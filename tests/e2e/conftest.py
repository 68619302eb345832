"""The whole loop with real parts: hub and agents as processes, real registries, real SMTP.

A module-scoped cloud registry holds app v1, v2 and an unrelated "tools" image that
shares the base layer (``deltaport.demo.images``, small sizes). Each test starts its
own hub (``deltaport hub serve`` on SQLite + a bundle folder, SMTP configured), its own
device registries and agents (``deltaport agent run``), and stops them all by PID.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deltaport.demo.fleet import HubFiles, prepare_hub_dir
from deltaport.demo.images import DemoSizes, write_demo_image, write_tools_image
from deltaport.demo.mail import MailCatcher
from deltaport.demo.processes import ProcessGroup, hub_command, log_tail
from deltaport.hub.client import HubClient
from deltaport.oci import TransportOptions
from tests.fixtures.services import Registry, free_port, run_registry

OPTS = TransportOptions(insecure=True)
SIZES = DemoSizes(base=3 << 20, runtime=1 << 20, app_files=40)
REQUESTER = "requester@example.com"


@dataclass(frozen=True)
class Cloud:
    """The cloud registry and the docker:// references of the three images in it."""

    registry: Registry
    refs: dict[str, str]  # "v1" | "v2" | "tools" → docker://…


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with run_registry(tmp_path_factory.mktemp("cloud")) as registry:
        refs = {
            "v1": registry.ref("demo/app:v1"),
            "v2": registry.ref("demo/app:v2"),
            "tools": registry.ref("demo/tools:v1"),
        }
        write_demo_image(1, refs["v1"], OPTS, SIZES)
        write_demo_image(2, refs["v2"], OPTS, SIZES)
        write_tools_image(refs["tools"], OPTS, SIZES)
        yield Cloud(registry, refs)


@pytest.fixture
def mail() -> Iterator[MailCatcher]:
    """A real SMTP server (aiosmtpd) collecting what the hub sends."""
    with MailCatcher() as catcher:
        yield catcher


@pytest.fixture
def group() -> Iterator[ProcessGroup]:
    """The processes a test starts; all stopped by PID at the end, pass or fail."""
    with ProcessGroup() as processes:
        yield processes


@dataclass
class Hub:
    """A running hub process and an operator client for it."""

    url: str
    port: int
    files: HubFiles
    client: HubClient


@pytest.fixture
def start_hub(tmp_path: Path, group: ProcessGroup,
              mail: MailCatcher) -> Iterator[Callable[..., Hub]]:
    """Start ``deltaport hub serve`` (SMTP → ``mail``) on HOST; returns the running Hub."""
    clients: list[HubClient] = []

    def start(host: str = "127.0.0.1") -> Hub:
        files = prepare_hub_dir(tmp_path / "hub", smtp=(mail.host, mail.port), hosts=host)
        port = free_port()
        child = group.start("hub", hub_command(files.data_dir, port, host), tmp_path / "hub.log")
        url = f"https://{host}:{port}"  # verified against the hub's starter CA
        child.wait_http(url + "/healthz", ca_file=files.ca_file)
        client = HubClient(url, files.operator_token, timeout=300, ca_file=files.ca_file)
        clients.append(client)
        return Hub(url, port, files, client)

    yield start
    for client in clients:
        client.close()


def wait_for(check: Callable[[], Any], what: str, timeout: float, *,
             logs: tuple[Path, ...] = ()) -> Any:
    """Poll CHECK until it returns something truthy; fail naming WHAT (and log tails)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}\n{log_tail(p)}" for p in logs)
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(0.3)


def checked_in(client: HubClient, device: str, images: int) -> bool:
    """The device checked in and the hub holds at least IMAGES present images for it."""
    status = client.device(device)
    present = [i for i in status["images"] if i["status"] == "present"]
    return bool(status["last_seen"]) and len(present) >= images


def active(client: HubClient, deployment: str) -> bool:
    state = client.deployment(deployment)["state"]
    assert state != "failed", client.deployment(deployment)
    return bool(state == "active")


def desired_deployment(path: Path) -> str | None:
    """The deployment named by the desired manifest an agent wrote (None: not yet)."""
    try:
        return str(json.loads(path.read_text())["deployment"])
    except (OSError, ValueError, KeyError):
        return None


def skopeo_image_id(ref: str, prefix: tuple[str, ...] = ()) -> str:
    """The image ID skopeo reads from REF: the independent check of what a device holds."""
    raw = subprocess.run([*prefix, "skopeo", "inspect", "--tls-verify=false", "--raw", ref],
                         check=True, capture_output=True, timeout=60).stdout
    return str(json.loads(raw)["config"]["digest"])


def compose(image_name: str) -> str:
    """A Docker Compose file running IMAGE_NAME (the hub's name: host/repo:tag)."""
    return f"services:\n  app:\n    image: {image_name}\n"
