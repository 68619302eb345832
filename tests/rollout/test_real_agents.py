"""Rollouts over real agents and a real hub: the canary's health gate decides.

A real hub (in a thread, SQLite, the real bundle builder) and three real agents
(``deltaport.agent.Agent``), each with its own Docker Distribution device registry.
The canary ``edge-1`` runs its modules in a real podman behind the health gate; the
two others hand the desired manifest to an external runtime (a file), which is what
``runtime.kind = "file"`` does. The demo images really run: v2 stays up, v3 exits 3 at
once. A first rollout (v2) completes wave by wave; a second (v3) fails the canary's
gate, the canary rolls back to v2 on the device, and the rollout pauses before wave 2:
v3 is staged on the others but never activated there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deltaport.agent import Agent, AgentConfig, HubSettings
from deltaport.agent.runtime.model import RuntimeKind, RuntimeSettings
from deltaport.bundle.keys import generate_keypair
from deltaport.config import Settings
from deltaport.demo.images import DemoSizes, write_demo_image
from deltaport.demo.outcome import engine_modules
from deltaport.fleet.queries import hash_token
from deltaport.hub.client import HubClient
from deltaport.hub.settings import HubServerSettings, OperatorToken
from deltaport.oci import TransportOptions
from tests.fixtures.podman import PodmanService, podman_service
from tests.fixtures.services import Registry, run_registry
from tests.hub.conftest import OPERATOR_TOKEN, hub_in_thread

pytestmark = pytest.mark.slow  # podman, four registries, a hub and three agents

OPTS = TransportOptions(insecure=True)
SIZES = DemoSizes(base=2 << 20, runtime=1 << 20, app_files=5)
DEVICES = ("edge-1", "edge-2", "edge-3")
CANARY = "edge-1"
ROUNDS = 12  # agent passes a rollout may take


@dataclass
class Fleet:
    hub: HubClient
    cloud: Registry
    agents: dict[str, Agent]
    engine: PodmanService
    images: dict[int, str]  # demo version → image ID
    tmp: Path

    def desired(self, device: str) -> dict[str, Any] | None:
        path = self.tmp / device / "desired.json"
        return json.loads(path.read_text()) if path.exists() else None

    def rollout(self, version: int) -> str:
        body = {"manifest": f"services:\n  app:\n    image: {self.cloud.host}/demo/app:v{version}"
                            "\n    restart: always\n",
                "devices": list(DEVICES), "canaries": [CANARY], "by": "ci",
                "email": "ops@example.com", "waves": "1%,100%",
                "success_threshold": "100%", "error_threshold": "1"}
        doc = self.hub.rollout_create(body)
        assert doc["waves"][0]["devices"] == [CANARY]
        return str(doc["rollout"])

    def run_until(self, rollout: str, state: str) -> dict[str, Any]:
        """Agent passes (every device, in turn) until ROLLOUT is in STATE."""
        for _ in range(ROUNDS):
            for agent in self.agents.values():
                agent.run_once()
            doc = self.hub.rollout(rollout)
            if doc["state"] == state:
                return doc
        raise AssertionError(f"rollout not {state} after {ROUNDS} rounds: {doc}")

    def activation(self, deployment: str) -> dict[str, str]:
        return {str(r["device"]): str((r.get("activation") or {}).get("state", "pending"))
                for r in self.hub.deployment(deployment)["devices"]}

    def running(self) -> dict[str, tuple[str, str]]:
        return {m.name: (m.image_id, m.state) for m in engine_modules(self.engine.docker_host)}


def _agent_config(tmp: Path, device: str, token: str, url: str, registry: Registry,
                  bundle_key: Path, manifest_key: Path,
                  engine: PodmanService | None) -> AgentConfig:
    home = tmp / device
    if engine is not None:
        runtime = RuntimeSettings(
            kind=RuntimeKind.ENGINE, docker_host=engine.docker_host,
            manifest_keys=(manifest_key,), health_window=3.0, health_grace=30.0,
            health_poll=0.5, stop_timeout=2.0, registry_root=registry.root, keep_free=0.0)
    else:
        runtime = RuntimeSettings(kind=RuntimeKind.FILE, manifest_keys=(manifest_key,),
                                  desired_file=home / "desired.json")
    return AgentConfig(
        device=device, trusted_keys=(bundle_key,), inbox=home / "inbox",
        state_dir=home / "state", registry=f"docker://{registry.host}",
        desired_manifest=home / "desired.json", runtime=runtime,
        hub=HubSettings(url, token, timeout=30.0, insecure=True), poll_interval=0.2)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    data = tmp_path / "hub"
    keys = generate_keypair(data / "keys")
    manifest_keys = generate_keypair(data / "keys", "manifest")
    settings = HubServerSettings(
        fleet=Settings(data_dir=data, db_url=f"sqlite:///{data / 'deltaport.db'}"),
        registry_insecure=True,
        operators=(OperatorToken("ci", hash_token(OPERATOR_TOKEN)),),
    )
    with ExitStack() as stack:
        cloud = stack.enter_context(run_registry(tmp_path / "cloud"))
        regs = {d: stack.enter_context(run_registry(tmp_path / f"reg-{d}")) for d in DEVICES}
        engine = stack.enter_context(podman_service(tmp_path / "pm", [regs[CANARY].host]))
        url = stack.enter_context(hub_in_thread(settings))
        hc = stack.enter_context(HubClient(url, OPERATOR_TOKEN, timeout=300))
        images = {}
        for version in (2, 3):
            ref = cloud.ref(f"demo/app:v{version}")
            images[version] = write_demo_image(version, ref, OPTS, SIZES)
            hc.register_image(ref)
        agents = {}
        for device in DEVICES:
            token = hc.add_device(device, local_registry=regs[device].host)["token"]
            config = _agent_config(tmp_path, device, str(token), url, regs[device],
                                   keys.public_key_path, manifest_keys.public_key_path,
                                   engine if device == CANARY else None)
            agents[device] = stack.enter_context(Agent(config))
        yield Fleet(hc, cloud, agents, engine, images, tmp_path)


def test_a_good_rollout_completes_and_a_bad_one_pauses_at_the_canary(fleet: Fleet) -> None:
    for agent in fleet.agents.values():
        agent.run_once()  # check-in: every device has nothing yet

    good = fleet.run_until(fleet.rollout(2), "complete")
    assert [(w["active"], w["failed"]) for w in good["waves"]] == [(1, 0), (2, 0)]
    assert set(fleet.activation(good["deployment"]).values()) == {"active"}
    assert fleet.running() == {"app": (fleet.images[2], "running")}
    for device in DEVICES[1:]:
        desired = fleet.desired(device)
        assert desired is not None and desired["deployment"] == good["deployment"]

    rid = fleet.rollout(3)
    bad = fleet.run_until(rid, "paused")
    assert "wave 1 has 1 of 1 device(s) failed" in bad["reason"], bad
    assert bad["current_wave"] == 1
    for agent in fleet.agents.values():  # delivery goes on; activation does not
        agent.run_once()
    bad = fleet.hub.rollout(rid)
    assert bad["state"] == "paused" and bad["current_wave"] == 1
    assert bad["waves"][1]["delivered"] == 2 and bad["waves"][1]["active"] == 0
    states = fleet.activation(bad["deployment"])
    assert states[CANARY] == "rolled_back"
    assert states["edge-2"] == states["edge-3"] == "delivered", states  # staged, not activated
    for device in DEVICES[1:]:
        desired = fleet.desired(device)
        assert desired is not None and desired["deployment"] == good["deployment"]
    # the canary rolled back on the device: v2 runs again
    assert fleet.running() == {"app": (fleet.images[2], "running")}
