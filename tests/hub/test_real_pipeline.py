"""The hub with the real parts: a real registry and real images, registered and deployed
through the operator API (real delta builder, signed bundles), downloaded by a device
through the device API and rebuilt, verified, then reported present."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx

from deltaport.bundle.keys import generate_keypair, load_public_key
from deltaport.config import Settings
from deltaport.delta.image import apply_image_delta, target_name
from deltaport.desired import DesiredModule, decode_envelope
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.queries import add_device, hash_token
from deltaport.hub.client import HubClient
from deltaport.hub.settings import HubServerSettings, OperatorToken
from deltaport.oci import TransportOptions, copy_image, open_source
from deltaport.transfer import DownloadConfig, download
from tests.fixtures.images import build_image, write_oci_layout
from tests.fixtures.services import Registry
from tests.hub.conftest import OPERATOR_TOKEN, hub_in_thread


def test_register_deploy_download_rebuild(registry: Registry, tmp_path: Path) -> None:
    opts = TransportOptions(insecure=True)
    layouts = {}
    for tag, variant in (("v1", 0), ("v2", 1)):
        layout = write_oci_layout(tmp_path / f"layout-{tag}", build_image(variant), tag="t")
        layouts[tag] = f"oci:{layout}:t"
        copy_image(layouts[tag], registry.ref(f"demo/app:{tag}"), opts)
    data = tmp_path / "data"
    keys = generate_keypair(data / "keys")
    manifest_keys = generate_keypair(data / "keys", "manifest")
    db_url = f"sqlite:///{data / 'deltaport.db'}"
    engine = init_db(db_url)
    with session_scope(engine) as s:
        _, token = add_device(s, name="edge-1", link_rate_bps=1_000_000)
    engine.dispose()
    settings = HubServerSettings(
        fleet=Settings(data_dir=data, db_url=db_url),
        registry_insecure=True,
        operators=(OperatorToken("ci", hash_token(OPERATOR_TOKEN)),),
    )
    with hub_in_thread(settings) as url, HubClient(url, OPERATOR_TOKEN, timeout=120) as hc:
        ids = {
            t: hc.register_image(registry.ref(f"demo/app:{t}"))["image_id"] for t in ("v1", "v2")
        }
        # prebuild: answered at once, the layer patches appear in the hub's cache after
        again = hc.register_image(registry.ref("demo/app:v1"), prebuild=True)
        assert again["prebuild"] == "started"
        cache = data / "patch-cache"
        deadline = time.monotonic() + 120
        while len(list(cache.glob("*.json"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(list(cache.glob("*.patch"))) == 3
        # the device has v1 (its inventory), and gets v2
        device = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=device, timeout=30) as dev:
            inv = {"images": [{"image_id": ids["v1"], "name": "demo/app:v1"}]}
            assert dev.post("/api/v1/device/checkin", json={"inventory": inv}).status_code == 200
            plan = hc.deploy(
                f"services:\n  app:\n    image: {registry.host}/demo/app:v2\n",
                by="ci",
                email="ops@example.com",
                devices=["edge-1"],
            )
            (row,) = plan["devices"]
            assert row["sending"] == [f"{registry.host}/demo/app:v2"] and row["bytes"] > 0
            (offer,) = dev.get("/api/v1/device/bundles").json()["bundles"]
            assert offer["image_id"] == ids["v2"] and offer["size"] == row["bytes"]
            assert offer["sources"] == [ids["v1"]]  # the agent's GC must keep v1 for now
            bundle = tmp_path / "bundle.dpb"
            download(
                url + offer["url"],
                bundle,
                None,
                expected_size=offer["size"],
                expected_sha256=offer["digest"],
                config=DownloadConfig(headers=device),
            )
            apply_image_delta(
                bundle,
                [layouts["v1"]],
                f"oci:{tmp_path / 'rebuilt'}:v2",
                trusted_keys=[load_public_key(keys.public_key_path)],
                scratch=tmp_path,
            )
            with open_source(f"oci:{tmp_path / 'rebuilt'}:v2") as rebuilt:
                assert rebuilt.image_id() == ids["v2"]
            msg = {
                "message_id": str(uuid.uuid4()),
                "device": "edge-1",
                "image_id": ids["v2"],
                "status": "present",
                "deployment": plan["deployment"],
            }
            assert dev.post("/api/v1/device/status", json={"messages": [msg]}).status_code == 200
            desired = dev.get("/api/v1/device/desired-manifest")
            assert desired.status_code == 200
            doc = decode_envelope(
                desired.content, [load_public_key(manifest_keys.public_key_path)], device="edge-1"
            )
            on_device = f"localhost:5000/{target_name(registry.ref('demo/app:v2'))}"
            assert doc.modules == (DesiredModule("app", on_device, ids["v2"]),)
        assert hc.deployment(plan["deployment"])["state"] == "active"
