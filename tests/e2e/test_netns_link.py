"""The device behind a real slow link: a network namespace, a veth pair, `tc tbf` at 1 Mbit/s.

The agent and the device registry run inside the namespace (``ip netns exec``); the
hub in the root namespace, reached over the veth whose hub-side egress is shaped
(../shared/RECIPES.md, "A slow, flaky link"). Mid-download the device's interface
goes down for a few seconds; the agent must still finish, verified. Namespaces and
links are removed in teardown, also when the test fails.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deltaport.demo.fleet import agent_config_text, write_agent_config
from deltaport.demo.processes import ProcessGroup, agent_command
from deltaport.demo.services import REGISTRY_CONFIG
from deltaport.pipelines.adapters import delivered_name
from tests.e2e.conftest import (
    Cloud,
    Hub,
    active,
    checked_in,
    compose,
    desired_deployment,
    skopeo_image_id,
    wait_for,
)
from tests.fixtures.netns import Netns, close_namespace, join_with_veth, open_namespace
from tests.fixtures.services import free_port

pytestmark = pytest.mark.slow  # end to end: `-m "not slow"` leaves it out

RATE_BPS = 1_000_000
OUTAGE_SECONDS = 4.0


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A namespace for the device, joined by a veth whose hub-side egress is shaped."""
    ns = Netns.for_this_process("e2e", 231)
    if (reason := open_namespace(ns)) is not None:
        pytest.skip(f"cannot create a network namespace (needs root): {reason}")
    try:
        join_with_veth(ns)
        subprocess.run(["tc", "qdisc", "replace", "dev", ns.host_if, "root", "tbf", "rate",
                        "1mbit", "burst", "16kb", "latency", "500ms"], check=True, timeout=30)
        yield ns
    finally:
        close_namespace(ns)


def _device_registry(group: ProcessGroup, ns: Netns, folder: Path) -> str:
    """A Docker Distribution registry inside the namespace, on its veth address."""
    folder.mkdir(parents=True)
    port = 5000
    cfg = folder / "config.yml"
    cfg.write_text(REGISTRY_CONFIG.format(root=folder / "storage", port=port,
                                          debug_port=free_port(), extra="")
                   .replace(f"127.0.0.1:{port}", f"{ns.ns_ip}:{port}"))
    child = group.start("device registry", ["docker-registry", "serve", str(cfg)],
                        folder / "registry.log", prefix=ns.prefix)
    child.wait_http(f"http://{ns.ns_ip}:{port}/v2/")
    return f"{ns.ns_ip}:{port}"


def test_agent_in_a_namespace_survives_an_outage_on_a_1mbit_link(
    cloud: Cloud,
    netns: Netns,
    start_hub: Callable[..., Hub],
    group: ProcessGroup,
    tmp_path: Path,
) -> None:
    hub = start_hub(host=netns.host_ip)
    hc = hub.client
    v1 = hc.register_image(cloud.refs["v1"])
    registry = _device_registry(group, netns, tmp_path / "device-registry")
    token = hc.add_device("dev-ns", local_registry=registry)["token"]
    files = write_agent_config(tmp_path / "device", agent_config_text(
        device="dev-ns", token=token, hub_url=hub.url, registry_host=registry,
        public_key=hub.files.public_key, poll_interval=1.0,
        manifest_key=hub.files.manifest_public_key, ca_file=hub.files.ca_file))
    group.start("agent dev-ns", agent_command(files.config), files.log, prefix=netns.prefix)
    logs = (tmp_path / "hub.log", files.log)
    wait_for(lambda: checked_in(hc, "dev-ns", 0), "dev-ns to check in", 30, logs=logs)

    before = netns.tx_bytes()
    plan = hc.deploy(compose(v1["image"]), by="e2e", email="ops@example.com",
                     devices=["dev-ns"])
    started = time.monotonic()
    size = plan["devices"][0]["bytes"]
    assert size > 400_000  # big enough to take seconds at 1 Mbit/s
    wait_for(lambda: netns.tx_bytes() - before > size // 4, "a quarter of the bundle", 60,
             logs=logs)
    assert hc.deployment(plan["deployment"])["state"] == "pending"  # mid-download
    netns.set_device_link(False)
    try:
        time.sleep(OUTAGE_SECONDS)
    finally:
        netns.set_device_link(True)
    wait_for(lambda: active(hc, plan["deployment"]), "the deployment to be active", 120,
             logs=logs)
    elapsed = time.monotonic() - started

    assert elapsed > 0.8 * size * 8 / RATE_BPS + OUTAGE_SECONDS  # the link really was slow
    on_device = delivered_name(str(v1["image"]))  # the cloud registry stays in the path
    assert skopeo_image_id(f"docker://{registry}/{on_device}") == v1["image_id"]
    at_hub = {i["image_id"]: i["status"] for i in hc.device("dev-ns")["images"]}
    assert at_hub[v1["image_id"]] == "present"
    wait_for(lambda: desired_deployment(files.desired_manifest) == plan["deployment"],
             "the desired manifest", 30, logs=logs)
