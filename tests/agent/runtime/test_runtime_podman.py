"""The whole device runtime, for real: the agent drives podman's Docker API from signed
desired manifests served by a hub, gates on health, rolls back, reports, and GCs.

Images are the demo's (they really run: static busybox, an httpd under a HEALTHCHECK;
v3 exits 3 at once), pushed into a real device registry run from a PID file so the
ready-made GC command can stop, collect and restart it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from deltaport.agent import Agent, AgentConfig, HubSettings
from deltaport.agent.registry import LocalRegistry
from deltaport.agent.runtime.model import RuntimeKind, RuntimeSettings
from deltaport.bundle import generate_keypair, load_private_key
from deltaport.demo.images import DemoSizes, write_demo_image
from deltaport.demo.outcome import engine_modules
from deltaport.desired import DesiredModule, DesiredState, ManifestKind, encode_envelope
from deltaport.oci import TransportOptions
from tests.agent.hubdouble import HubDouble
from tests.agent.runtime.conftest import DeviceRegistry
from tests.fixtures.podman import PodmanService, podman_service

DEVICE = "dev-1"
OPTS = TransportOptions(insecure=True)
SIZES = DemoSizes(base=2 << 20, runtime=1 << 20, app_files=5)


@dataclass
class Rig:
    registry: DeviceRegistry
    engine: PodmanService
    hub: HubDouble
    images: dict[int, str]  # version → image ID
    config: AgentConfig
    key: Any

    def publish(self, version: int, image: int, **module: Any) -> None:
        """Push demo image IMAGE (as a delivery would) and serve a manifest VERSION for it."""
        host = self.registry.registry.host
        ref = f"{host}/demo/app:v{image}"
        if image not in self.images:
            self.images[image] = write_demo_image(image, f"docker://{ref}", OPTS, SIZES)
        service = {"image": ref, "restart": "always", **module}
        state = DesiredState(
            device=DEVICE, version=version, deployment=f"d-{version}",
            issued_at="2026-12-02T00:00:00Z", kind=ManifestKind.COMPOSE,
            modules=(DesiredModule("app", ref, self.images[image]),),
            manifest={"services": {"app": service}})
        self.hub.desired[DEVICE] = encode_envelope(state, [self.key])

    def activations(self) -> list[dict[str, Any]]:
        return [m for m in self.hub.statuses() if m.get("kind") == "activation"]


@pytest.fixture
def rig(tmp_path: Path, device: DeviceRegistry) -> Iterator[Rig]:
    host = device.registry.host
    keys = generate_keypair(tmp_path / "manifest-keys")
    with podman_service(tmp_path / "pm", [host]) as engine, \
            HubDouble(tokens={"tok-1": DEVICE}) as hub:
        runtime = RuntimeSettings(
            kind=RuntimeKind.ENGINE, docker_host=engine.docker_host,
            manifest_keys=(keys.public_key_path,), health_window=3.0, health_grace=30.0,
            health_poll=0.5, stop_timeout=2.0, registry_root=device.registry.root,
            registry_gc_command=device.gc_command, keep_free=0.0)
        config = AgentConfig(
            device=DEVICE, trusted_keys=(keys.public_key_path,), inbox=tmp_path / "inbox",
            state_dir=tmp_path / "state", registry=f"docker://{host}",
            hub=HubSettings(f"http://127.0.0.1:{hub.port}", "tok-1", timeout=10.0,
                            insecure=True),
            runtime=runtime)
        yield Rig(device, engine, hub, {}, config, load_private_key(keys.private_key_path))


def _running(rig: Rig) -> dict[str, tuple[str, str]]:
    return {m.name: (m.image_id, m.state) for m in engine_modules(rig.engine.docker_host)}


def test_activate_roll_back_a_broken_update_then_update_and_gc(rig: Rig) -> None:
    rig.publish(1, 1)
    with Agent(rig.config) as agent:
        report = agent.run_once()
        assert report.runtime_error is None and report.runtime and "active" in report.runtime
        assert _running(rig) == {"app": (rig.images[1], "running")}
        first = {m.name: m.container for m in engine_modules(rig.engine.docker_host)}

        # what runs reached the hub: desired vs running, per module
        reports = [b["report"] for _, b in rig.hub.runtime if "report" in b]
        assert reports[-1]["deployment"] == {"id": "d-1", "version": 1}
        [module] = reports[-1]["modules"]
        assert (module["module"], module["running_image_id"], module["runtime_status"]) == (
            "app", rig.images[1], "running")

        # v3 exits at once: the gate fails, v1's very container runs again
        rig.publish(2, 3)
        report = agent.run_once()
        assert report.runtime and "rolled_back" in report.runtime
        assert _running(rig) == {"app": (rig.images[1], "running")}
        assert {m.name: m.container for m in engine_modules(rig.engine.docker_host)} == first
        last = rig.activations()[-1]
        assert (last["outcome"], last["version"], last["module"]) == ("rolled_back", 2, "app")
        assert any("settings.json" in line for line in last["logs"]), last["logs"]
        agent.run_once()  # not retried by the device itself
        assert [m["outcome"] for m in rig.activations()].count("activating") == 2

        # v2 works: active, and the images nothing needs any more are removed for real
        rig.publish(4, 2)
        report = agent.run_once()
        assert report.runtime and "active" in report.runtime, report
        assert _running(rig) == {"app": (rig.images[2], "running")}
        tags = {i.name for i in LocalRegistry(rig.registry.registry.host).images()}
        assert tags == {"demo/app:v1", "demo/app:v2"}  # running + kept for rollback
        removed = [m for m in rig.hub.statuses() if m.get("status") == "removed"]
        assert [m["image_id"] for m in removed] == [rig.images[3]]

        # a replay of v1's old manifest is refused and changes nothing
        rig.publish(1, 1)
        agent.run_once()
        assert rig.activations()[-1]["outcome"] == "refused"
        assert "older than the running version 4" in rig.activations()[-1]["reason"]
        assert _running(rig) == {"app": (rig.images[2], "running")}


def test_a_module_that_stays_unhealthy_is_rolled_back(rig: Rig) -> None:
    rig.publish(1, 1)
    broken_check = {"healthcheck": {"test": ["CMD", "/bin/busybox", "false"],
                                    "interval": "1s", "retries": 1}}
    with Agent(rig.config) as agent:
        agent.run_once()
        rig.publish(2, 2, **broken_check)
        report = agent.run_once()
    assert report.runtime and "rolled_back" in report.runtime, report
    assert "unhealthy" in rig.activations()[-1]["reason"]
    assert _running(rig) == {"app": (rig.images[1], "running")}


def test_an_agent_restarted_mid_activation_ends_old_running_or_new_proven(rig: Rig) -> None:
    rig.publish(1, 1)
    with Agent(rig.config) as agent:
        agent.run_once()
    rig.publish(2, 2)
    slow = replace(rig.config, runtime=replace(rig.config.runtime, health_window=30.0))
    with Agent(slow) as agent:  # stopped during its health gate, as SIGTERM does
        timer = time.monotonic()
        threading.Timer(4.0, agent.stop.set).start()
        report = agent.run_once()
        assert time.monotonic() - timer < 30
    assert report.runtime_error and "Interrupted" in report.runtime_error
    with Agent(rig.config) as agent:  # restarted: the previous deployment first, then again
        report = agent.run_once()
    assert report.runtime and "active" in report.runtime
    assert _running(rig) == {"app": (rig.images[2], "running")}
