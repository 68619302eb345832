"""The real device agent against the real hub: the contract of docs/hub-api.md, both sides real.

A cloud registry with demo/app:v1 and v2, a device registry with v1; the operator
registers both and deploys v2 through the API; one agent pass checks in, downloads
the bundle through a link that cuts every 64 KiB (the
delta is smaller than that here), rebuilds v2 into the device registry,
reports it; the hub completes and activates the deployment; the agent's next pass
writes the desired manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deltaport.agent import Agent, AgentConfig, HubSettings
from deltaport.agent.runtime.model import RuntimeKind, RuntimeSettings
from deltaport.bundle.keys import generate_keypair
from deltaport.config import Settings
from deltaport.delta.image import target_name
from deltaport.fleet.queries import hash_token
from deltaport.hub.client import HubClient
from deltaport.hub.settings import HubServerSettings, OperatorToken
from deltaport.oci import TransportOptions, copy_image, open_source
from tests.fixtures.images import build_image, write_oci_layout
from tests.fixtures.proxy import TcpProxy
from tests.fixtures.services import Registry, run_registry
from tests.hub.conftest import OPERATOR_TOKEN, hub_in_thread

OPTS = TransportOptions(insecure=True)


@pytest.mark.parametrize("pinned", [False, True], ids=["by-tag", "pinned-by-digest"])
def test_agent_and_hub_close_the_loop(registry: Registry, tmp_path: Path, pinned: bool) -> None:
    """Pinned: the manifest names the cloud manifest digest, which the device never has."""
    layouts = {}
    for tag, variant in (("v1", 0), ("v2", 1)):
        layout = write_oci_layout(tmp_path / f"layout-{tag}", build_image(variant), tag="t")
        layouts[tag] = f"oci:{layout}:t"
        copy_image(layouts[tag], registry.ref(f"demo/app:{tag}"), OPTS)
    data = tmp_path / "data"
    keys = generate_keypair(data / "keys")
    manifest_keys = generate_keypair(data / "keys", "manifest")
    settings = HubServerSettings(
        fleet=Settings(data_dir=data, db_url=f"sqlite:///{data / 'deltaport.db'}"),
        registry_insecure=True,
        operators=(OperatorToken("ci", hash_token(OPERATOR_TOKEN)),),
    )
    with (
        run_registry(tmp_path / "device-registry") as device_registry,
        hub_in_thread(settings) as url,
        HubClient(url, OPERATOR_TOKEN, timeout=120) as hc,
    ):
        copy_image(layouts["v1"], device_registry.ref("demo/app:v1"), OPTS)
        registered = {t: hc.register_image(registry.ref(f"demo/app:{t}")) for t in ("v1", "v2")}
        ids = {t: str(doc["image_id"]) for t, doc in registered.items()}
        wanted = (f"{registry.host}/demo/app@{registered['v2']['manifest_digest']}" if pinned
                  else f"{registry.host}/demo/app:v2")
        token = hc.add_device("edge-1", local_registry=device_registry.host)["token"]
        port = int(url.rsplit(":", 1)[1])
        with TcpProxy(("127.0.0.1", port), cut_after=64 * 1024) as link:
            config = AgentConfig(
                device="edge-1",
                trusted_keys=(keys.public_key_path,),
                inbox=tmp_path / "inbox",
                state_dir=tmp_path / "state",
                registry=f"docker://{device_registry.host}",
                desired_manifest=tmp_path / "desired.json",
                runtime=RuntimeSettings(  # an external runtime: the agent writes the file
                    kind=RuntimeKind.FILE,
                    manifest_keys=(manifest_keys.public_key_path,),
                    desired_file=tmp_path / "desired.json",
                ),
                hub=HubSettings(link.url, token, timeout=10.0, insecure=True),
                poll_interval=0.2,
            )
            with Agent(config) as agent:
                agent.run_once()  # check-in: the hub learns the device has v1
                assert hc.device("edge-1")["images"][0]["status"] == "present"
                plan = hc.deploy(
                    f"services:\n  app:\n    image: {wanted}\n",
                    by="ci",
                    email="ops@example.com",
                    devices=["edge-1"],
                )
                assert plan["devices"][0]["bytes"] > 0
                for _ in range(6):
                    agent.run_once()
                    activation = hc.deployment(plan["deployment"])["devices"][0]["activation"]
                    if (tmp_path / "desired.json").exists() and activation["state"] == "active":
                        break
        status = hc.deployment(plan["deployment"])
        assert status["state"] == "active", status
        # by the registered name, whichever spelling the manifest used
        assert status["devices"][0]["images"] == {f"{registry.host}/demo/app:v2": "present"}
        on_device = target_name(registry.ref("demo/app:v2"))  # the cloud registry in its path
        with open_source(device_registry.ref(on_device), OPTS) as rebuilt:
            assert rebuilt.image_id() == ids["v2"]
        # the agent verified the signed manifest (trusting manifest.pub) and wrote it
        desired = json.loads((tmp_path / "desired.json").read_text())
        assert desired["deployment"] == plan["deployment"] and desired["version"] == 1
        assert desired["images"] == [
            {"module": "app", "reference": f"{device_registry.host}/{on_device}",
             "image_id": ids["v2"]}
        ]
        # ... and told the hub: activation message, runtime report
        activation = status["devices"][0]["activation"]
        assert activation["state"] == "active" and activation["version"] == 1, activation
        runtime = hc.device("edge-1")["runtime"]
        assert runtime["desired"]["version"] == 1
        assert runtime["last_attempt"]["outcome"] == "active", runtime
        assert link.bytes_down >= plan["devices"][0]["bytes"]  # the bundle came over the link
