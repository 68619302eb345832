"""A lost bundle does not block a device: the next deployment still arrives (issue 11, item 7).

Real hub pipeline, real registries, the real agent. The bundle of a first deployment
disappears from the hub's store; a second deployment (another image) follows. One
agent pass must report the first failed, for good, and deliver the second.
"""

from __future__ import annotations

from pathlib import Path

from deltaport.agent import Agent, AgentConfig, HubSettings
from deltaport.bundle.keys import generate_keypair
from deltaport.config import Settings
from deltaport.fleet.queries import hash_token
from deltaport.hub.client import HubClient
from deltaport.hub.settings import HubServerSettings, OperatorToken
from deltaport.oci import TransportOptions, copy_image, open_source
from deltaport.pipelines.adapters import delivered_name
from deltaport.pipelines.image_to_device import bundle_store_key
from tests.fixtures.images import build_image, write_oci_layout
from tests.fixtures.services import Registry, run_registry
from tests.hub.conftest import OPERATOR_TOKEN, hub_in_thread

OPTS = TransportOptions(insecure=True)


def test_a_lost_bundle_fails_and_the_next_deployment_arrives(
        registry: Registry, tmp_path: Path) -> None:
    for name, variant in (("demo/app:v1", 0), ("demo/web:v1", 2)):
        layout = write_oci_layout(tmp_path / f"layout-{variant}", build_image(variant), tag="t")
        copy_image(f"oci:{layout}:t", registry.ref(name), OPTS)
    data = tmp_path / "data"
    keys = generate_keypair(data / "keys")
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
        app = hc.register_image(registry.ref("demo/app:v1"))
        web = hc.register_image(registry.ref("demo/web:v1"))
        token = hc.add_device("edge-1", local_registry=device_registry.host)["token"]
        lost = hc.deploy(f"services:\n  app:\n    image: {app['image']}\n", by="ci",
                         email="ops@example.com", devices=["edge-1"])
        [lost_key] = lost["devices"][0]["bundles"]
        (data / "outbox" / bundle_store_key(lost_key)).unlink()  # the store lost it
        second = hc.deploy(f"services:\n  web:\n    image: {web['image']}\n", by="ci",
                           email="ops@example.com", devices=["edge-1"])
        config = AgentConfig(
            device="edge-1", trusted_keys=(keys.public_key_path,), inbox=tmp_path / "inbox",
            state_dir=tmp_path / "state", registry=f"docker://{device_registry.host}",
            hub=HubSettings(url, token, timeout=10.0, insecure=True), poll_interval=0.2,
        )
        with Agent(config) as agent:
            report = agent.run_once()
            agent.run_once()  # the status messages of the first pass reach the hub
        assert report.hub_failure is None, report  # a lost bundle is not "hub down"
        images = {i["image_id"]: i for i in hc.device("edge-1")["images"]}
        assert images[app["image_id"]]["status"] == "failed"
        assert "missing" in images[app["image_id"]]["failure_reason"], images
        assert images[web["image_id"]]["status"] == "present", images
        assert hc.deployment(second["deployment"])["state"] in ("complete", "active")
        on_device = device_registry.ref(delivered_name(str(web["image"])))
        with open_source(on_device, OPTS) as rebuilt:
            assert rebuilt.image_id() == web["image_id"]
