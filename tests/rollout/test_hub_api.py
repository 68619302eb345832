"""Rollouts through a live hub (real uvicorn, real SQLite): the operator API and the
device status path. dev-1 has v1, dev-2 nothing; both get v2; dev-2 is the canary."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deltaport.bundle.keys import generate_keypair
from deltaport.errors import StateError
from deltaport.fleet import device_images, queries
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.documents import Inventory, InventoryEntry
from deltaport.hub.client import HubClient
from deltaport.pipelines import image_to_device as i2d
from tests.fleet.fakes import FakeRegistry, FakeSigner
from tests.hub.conftest import OPERATOR_TOKEN, REGISTRY, LiveHub, World, fake_toolkit, hub_in_thread

COMPOSE_V2 = f"services:\n  app:\n    image: {REGISTRY}/demo/app:v2\n"
DEVICE_API = "/api/v1/device/status"


@pytest.fixture
def hub(tmp_path: Path, sqlite_url: str) -> Iterator[LiveHub]:
    """tests.hub's world without its pending deployment (it would activate v2 by itself)."""
    data = tmp_path / "data"
    generate_keypair(data / "keys", "manifest")
    registry = FakeRegistry()
    registry.add(f"{REGISTRY}/demo/app:v1", ["base", "lib1", "app1"])
    registry.add(f"{REGISTRY}/demo/app:v2", ["base", "lib1", "app2"])
    engine = init_db(sqlite_url)
    tokens: dict[str, str] = {}
    with session_scope(engine) as s:
        for tag in ("v1", "v2"):
            i2d.register(s, reference=f"docker://{REGISTRY}/demo/app:{tag}", name=None,
                         reader=registry, signer=FakeSigner(), signatures_dir=data / "sigs")
        for name in ("dev-1", "dev-2"):
            _, tokens[name] = queries.add_device(s, name=name, link_rate_bps=1_000_000)
        v1 = queries.find_image(s, f"{REGISTRY}/demo/app:v1").image_id
        v2 = queries.find_image(s, f"{REGISTRY}/demo/app:v2").image_id
        device_images.record_inventory(s, device=queries.get_device(s, "dev-1"),
                                 inventory=Inventory((InventoryEntry(v1, "demo/app:v1"),)))
    engine.dispose()
    world = World(data, sqlite_url, registry, tokens, "", v1, v2, {}, 1024)
    toolkit = fake_toolkit(registry, 1024)
    with hub_in_thread(world.settings(), toolkit=toolkit) as url:
        yield LiveHub(url, world, toolkit)


def body(**kw: Any) -> dict[str, Any]:
    return {"manifest": COMPOSE_V2, "devices": ["dev-1", "dev-2"], "by": "alice",
            "email": "alice@example.com", "waves": "50%,100%", "success_threshold": "100%",
            "error_threshold": "1", "canaries": ["dev-2"], **kw}


def present(hub: LiveHub, device: str, deployment: str) -> None:
    msg = {"message_id": str(uuid.uuid4()), "device": device, "image_id": hub.world.v2,
           "status": "present", "deployment": deployment, "at": "2026-12-03T07:00:00Z",
           "target": "demo/app:v2", "via": "hub", "bytes": {"bundle": 1, "downloaded": 1}}
    with hub.device(device) as c:
        assert c.post(DEVICE_API, json={"messages": [msg]}).status_code == 200


def outcome(hub: LiveHub, device: str, deployment: str, what: str) -> None:
    msg = {"message_id": str(uuid.uuid4()), "kind": "activation", "device": device,
           "deployment": deployment, "version": 1, "outcome": what}
    if what == "rolled_back":
        msg |= {"reason": "health check failed", "module": "app", "exit_code": 3,
                "restart_count": 0, "logs": ["boom"]}
    with hub.device(device) as c:
        assert c.post(DEVICE_API, json={"messages": [msg]}).status_code == 200


def published(hc: HubClient, deployment: str) -> dict[str, Any]:
    return {r["device"]: r["activation"].get("published_version")
            for r in hc.deployment(deployment)["devices"]}


def test_canary_rolls_back_and_the_rollout_pauses_before_wave_2(hub: LiveHub) -> None:
    with HubClient(hub.url, OPERATOR_TOKEN, timeout=30) as hc:
        doc = hc.rollout_create(body())
        rid, dep = doc["rollout"], doc["deployment"]
        assert doc["state"] == "staging" and [w["devices"] for w in doc["waves"]] == [
            ["dev-2"], ["dev-1"]]
        assert "wave 1 waits for delivery: 0 of 1" in doc["reason"]
        present(hub, "dev-1", dep)
        present(hub, "dev-2", dep)
        status = hc.rollout(rid)
        assert status["state"] == "running" and status["current_wave"] == 1
        assert published(hc, dep) == {"dev-2": 1, "dev-1": None}
        outcome(hub, "dev-2", dep, "rolled_back")
        status = hc.rollout(rid)
        assert status["state"] == "paused" and "error threshold 1" in status["reason"]
        assert published(hc, dep)["dev-1"] is None  # no other device activated
        with pytest.raises(StateError):
            hc.rollout_action(rid, "approve")
        assert hc.rollout_action(rid, "cancel")["state"] == "cancelled"
        assert published(hc, dep)["dev-1"] is None


def test_approve_each_then_complete(hub: LiveHub) -> None:
    with HubClient(hub.url, OPERATOR_TOKEN, timeout=30) as hc:
        doc = hc.rollout_create(body(approve_each=True))
        rid, dep = doc["rollout"], doc["deployment"]
        present(hub, "dev-1", dep)
        present(hub, "dev-2", dep)
        outcome(hub, "dev-2", dep, "active")
        status = hc.rollout(rid)
        assert status["state"] == "awaiting_approval"
        assert "wave 2 waits for approval" in status["reason"]
        assert published(hc, dep)["dev-1"] is None
        assert hc.rollout_action(rid, "approve")["current_wave"] == 2
        assert published(hc, dep)["dev-1"] == 1
        outcome(hub, "dev-1", dep, "active")
        assert hc.rollout(rid)["state"] == "complete"
    with hub.operator() as c:
        assert c.post(f"/api/v1/rollouts/{rid}/explode").status_code == 422
        assert c.get("/api/v1/rollouts/r-nope").status_code == 404


def test_the_cli_against_the_hub(hub: LiveHub, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from deltaport.cli import main as cli_main

    if not cli_main.app.registered_groups:
        cli_main._register_groups()
    compose = tmp_path / "compose.yaml"
    compose.write_text(COMPOSE_V2)
    remote = ["--hub", hub.url, "--token", OPERATOR_TOKEN]
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli_main.app, ["rollout", *args, *remote],
                               env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        return result.output

    made = json.loads(run("create", str(compose), "--devices", "dev-1,dev-2", "--waves",
                          "50%,100%", "--canary", "dev-1", "--error-threshold", "1",
                          "--by", "alice", "--email", "alice@example.com", "--json"))
    assert made["waves"][0]["devices"] == ["dev-1"] and made["error_threshold"] == "1"
    table = run("status", made["rollout"])
    assert "wave 1 waits for delivery" in table and "dev-2" in table
    assert json.loads(run("pause", made["rollout"], "--json"))["state"] == "paused"
    assert json.loads(run("resume", made["rollout"], "--json"))["state"] == "staging"
    bad = runner.invoke(cli_main.app, ["rollout", "create", str(compose), "--waves", "50%",
                                       "--by", "a", "--email", "a@b", *remote])
    assert bad.exit_code != 0 and "last wave must be 100%" in str(bad.exception or bad.output)


def test_a_maintenance_window_set_through_the_hub_is_signed_and_audited(hub: LiveHub) -> None:
    """``deltaport device label --hub`` sets the window through the operator API (checked,
    audit-logged); the canary's next signed desired manifest carries it."""
    import json

    from typer.testing import CliRunner

    from deltaport.bundle.keys import load_public_key
    from deltaport.cli import main as cli_main
    from deltaport.desired import decode_envelope
    from deltaport.desired.window import WINDOW_FIELD, WINDOW_LABEL

    if not cli_main.app.registered_groups:
        cli_main._register_groups()
    remote = ["--hub", hub.url, "--token", OPERATOR_TOKEN]
    runner = CliRunner()
    done = runner.invoke(cli_main.app, ["device", "label", "dev-2", "site=north",
                                        f"{WINDOW_LABEL}=sat,sun 22:00-2:00 UTC", "--json",
                                        *remote])
    assert done.exit_code == 0, done.output
    window = "Sat,Sun 22:00-02:00 UTC"  # stored in its normal form
    assert json.loads(done.output) == {"device": "dev-2",
                                       "labels": {"site": "north", WINDOW_LABEL: window}}
    with hub.operator() as c:  # a bad window is refused by the hub too, and nothing changes
        bad = c.post("/api/v1/devices/dev-2/labels", json={"set": {WINDOW_LABEL: "soon"}})
        assert bad.status_code == 422 and "DAYS HH:MM-HH:MM ZONE" in bad.text
        assert c.post("/api/v1/devices/nope/labels", json={}).status_code == 404
        gone = c.post("/api/v1/devices/dev-2/labels", json={"remove": ["site"]})
        assert gone.json()["labels"] == {WINDOW_LABEL: window}
        entries = c.get("/api/v1/audit").json()
    labelled = [(e["target"], e["outcome"]) for e in entries if e["action"] == "device.label"]
    assert sorted(labelled) == [("dev-2", 200), ("dev-2", 200), ("dev-2", 422), ("nope", 404)]
    with HubClient(hub.url, OPERATOR_TOKEN, timeout=30) as hc:
        doc = hc.rollout_create(body())
        present(hub, "dev-1", doc["deployment"])
        present(hub, "dev-2", doc["deployment"])  # the canary's wave starts: dev-2 published
        assert published(hc, doc["deployment"])["dev-2"] == 1
    with hub.device("dev-2") as d:
        signed = d.get("/api/v1/device/desired-manifest")
    trusted = [load_public_key(hub.world.manifest_public_key)]
    state = decode_envelope(signed.content, trusted, device="dev-2")
    assert state.manifest[WINDOW_FIELD] == window
