"""The operator API against a live hub, through ``deltaport.hub.client.HubClient``."""

from __future__ import annotations

import dataclasses
import uuid

import httpx
import pytest

from deltaport.bundle.keys import load_public_key
from deltaport.desired import decode_envelope
from deltaport.errors import AccessError, FormatError, StateError, UsageError
from deltaport.hub.client import HubClient
from tests.hub.conftest import (
    OPERATOR_TOKEN,
    REGISTRY,
    LiveHub,
    SizedBuilder,
    World,
    fake_toolkit,
    hub_in_thread,
)

COMPOSE_V2 = f"services:\n  app:\n    image: {REGISTRY}/demo/app:v2\n"


def client(hub: LiveHub, token: str = OPERATOR_TOKEN) -> HubClient:
    return HubClient(hub.url, token, timeout=30)


def test_operator_endpoints_need_an_operator_token(hub: LiveHub) -> None:
    paths = [
        "/api/v1/deployments",
        f"/api/v1/deployments/{hub.world.deployment}",
        "/api/v1/devices/dev-1",
        "/api/v1/history",
    ]
    for token in (None, "bad", hub.world.tokens["dev-1"]):  # a device token is not enough
        with hub.client(token) as c:
            for path in paths:
                r = c.get(path)
                assert r.status_code == 401, (token, path)
                assert r.json()["error"] == "AccessError"
            assert c.post("/api/v1/devices", json={"name": "x"}).status_code == 401
    with pytest.raises(AccessError) as err, client(hub, "bad") as hc:
        hc.deployments()
    assert err.value.status == 401 and err.value.exit_code == 11


def test_queries_match_the_cli_documents(hub: LiveHub) -> None:
    w = hub.world
    with client(hub) as hc:
        dep = hc.deployment(w.deployment)
        assert dep["id"] == w.deployment and dep["state"] == "pending"
        assert {d["device"] for d in dep["devices"]} == {"dev-1", "dev-2"}
        assert [d["id"] for d in hc.deployments(by="alice")] == [w.deployment]
        assert hc.deployments(by="nobody") == []
        dev = hc.device("dev-1")
        assert {i["image_id"]: i["status"] for i in dev["images"]} == {
            w.v1: "present",
            w.v2: "in_transit",
        }
        img = hc.image(f"{REGISTRY}/demo/app:v2")  # a name with '/' and ':' in the path
        assert img["image_id"] == w.v2 and img["counts"] == {"in_transit": 2}
        assert hc.image(w.v1)["image"] == f"{REGISTRY}/demo/app:v1"
        history = hc.history(since="1h", every="minute")
        assert sum(b["counts"].get("in_transit", 0) for b in history) == 2
        with pytest.raises(StateError, match="unknown deployment"):
            hc.deployment("d-nope")
        with pytest.raises(StateError, match="unknown device"):
            hc.device("ghost")
        with pytest.raises(StateError, match="not registered"):
            hc.image("nothing/here:v9")
        with pytest.raises(UsageError):
            hc.history(every="fortnight")
    with hub.operator() as c:
        assert c.get("/api/v1/devices/ghost").status_code == 404
        assert c.get("/api/v1/deployments", params={"limit": 0}).status_code == 422
        nowhere = c.get("/api/v1/nowhere")
        assert nowhere.status_code == 404 and nowhere.json()["error"] == "HTTPError"
        assert c.delete("/api/v1/deployments").status_code == 405


def test_add_device_then_it_can_check_in(hub: LiveHub) -> None:
    with client(hub) as hc:
        added = hc.add_device("dev-3", link_rate="512kbit", labels={"site": "mine-3"})
        assert added["link_rate_bps"] == 512_000 and added["labels"] == {"site": "mine-3"}
        with pytest.raises(StateError, match="already exists"):
            hc.add_device("dev-3")
        with pytest.raises(UsageError):
            hc.add_device("bad name!")
    with hub.client(added["token"]) as dev:
        r = dev.post(
            "/api/v1/device/checkin", json={"inventory": {"images": [{"image_id": hub.world.v1}]}}
        )
        assert r.status_code == 200
    with client(hub) as hc:
        assert hc.device("dev-3")["last_seen"] is not None


def test_register_deploy_activate_through_the_api(hub: LiveHub) -> None:
    w = hub.world
    w.registry.add(f"{REGISTRY}/demo/app:v3", ["base", "lib1", "app3"])
    with client(hub) as hc:
        reg = hc.register_image(f"docker://{REGISTRY}/demo/app:v3", build_id="ci-7")
        assert reg["image"] == f"{REGISTRY}/demo/app:v3" and reg["layers"] == 3
        assert hc.image(f"{REGISTRY}/demo/app:v3")["registered_by"] == "ops"
        with pytest.raises(StateError, match="not registered"):
            hc.deploy(
                COMPOSE_V2.replace("v2", "v9"), by="bob", email="bob@example.com", devices=["dev-1"]
            )
        with pytest.raises(FormatError):
            hc.deploy("services: [", by="bob", email="bob@example.com", devices=["dev-1"])
        tmpl = "services:\n  app:\n    image: ${REG}/demo/app:${TAG}\n"
        result = hc.deploy(
            tmpl,
            by="bob",
            email="bob@example.com",
            devices=["dev-1"],
            variables={"REG": REGISTRY, "TAG": "v3"},
        )
        dep = result["deployment"]
        (row,) = result["devices"]
        assert row["device"] == "dev-1" and row["sending"] == [f"{REGISTRY}/demo/app:v3"]
        assert row["bytes"] == 300 * 1024 and len(result["built"]) == 1
        assert row["eta_seconds"] == pytest.approx(300 * 1024 * 8 / 1_000_000, abs=0.1)
        with pytest.raises(StateError, match="cannot be activated"):
            hc.activate(dep)
    v3 = reg["image_id"]
    with hub.device("dev-1") as dev:
        offers = dev.get("/api/v1/device/bundles").json()["bundles"]
        assert {o["image_id"] for o in offers} == {w.v2, v3}
        msg = {
            "message_id": str(uuid.uuid4()),
            "device": "dev-1",
            "image_id": v3,
            "status": "present",
            "deployment": dep,
        }
        assert dev.post("/api/v1/device/status", json={"messages": [msg]}).status_code == 200
        desired = dev.get("/api/v1/device/desired-manifest")
        assert desired.status_code == 200
        trusted = [load_public_key(w.manifest_public_key)]
        assert decode_envelope(desired.content, trusted, device="dev-1").deployment == dep
    with client(hub) as hc:
        assert hc.deployment(dep)["state"] == "active"
        assert hc.activate(dep)["deployment"] == dep


def test_deploy_request_checks(hub: LiveHub) -> None:
    with hub.operator() as c:
        missing = c.post("/api/v1/deployments", json={"manifest": COMPOSE_V2})
        empty = c.post(
            "/api/v1/deployments",
            json={"manifest": COMPOSE_V2, "by": "", "email": "", "devices": ["dev-1"]},
        )
        nobody = c.post(
            "/api/v1/deployments",
            json={"manifest": COMPOSE_V2, "by": "a", "email": "a@b", "devices": ["ghost"]},
        )
        base = {"manifest": COMPOSE_V2, "by": "a", "email": "a@b", "devices": ["dev-1"]}
        not_int = [
            c.post("/api/v1/deployments", json={**base, "priority": p}) for p in ("1", True, 1.5)
        ]
        too_big = c.post("/api/v1/deployments", json={**base, "priority": 10**7})
    assert missing.status_code == 422 and missing.json()["error"] == "FormatError"
    assert empty.status_code == 422
    assert [r.status_code for r in not_int] == [422, 422, 422]
    assert too_big.status_code == 400 and "priority" in too_big.json()["message"]
    assert nobody.status_code == 404 and "ghost" in nobody.json()["message"]


def test_openapi_lists_the_endpoints(hub: LiveHub) -> None:
    with hub.client() as c:
        doc = c.get("/openapi.json").json()
    paths = doc["paths"]
    for path, method in [
        ("/api/v1/device/checkin", "post"),
        ("/api/v1/device/status", "post"),
        ("/api/v1/device/bundles", "get"),
        ("/api/v1/device/bundles/{digest}", "get"),
        ("/api/v1/device/desired-manifest", "get"),
        ("/api/v1/deployments", "post"),
        ("/api/v1/deployments/{deployment_id}/activate", "post"),
        ("/api/v1/images/{reference}", "get"),
        ("/api/v1/devices", "post"),
    ]:
        assert method in paths[path], path
    body = paths["/api/v1/device/status"]["post"]["requestBody"]["content"]["application/json"]
    assert "messages" in body["schema"]["properties"]
    assert "$ref" not in str(body)  # nested shapes are inlined, so the document resolves


def test_a_hub_without_a_signing_key_sends_unsigned_bundles_only_when_asked(
        world: World) -> None:
    toolkit = fake_toolkit(world.registry)
    toolkit = dataclasses.replace(toolkit, builder=SizedBuilder(signer=None))
    base = {"manifest": COMPOSE_V2, "by": "a", "email": "a@b", "devices": ["new-1"]}
    with hub_in_thread(world.settings(), toolkit=toolkit) as url, \
            httpx.Client(base_url=url, timeout=30,
                         headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}) as c:
        assert c.post("/api/v1/devices", json={"name": "new-1"}).status_code == 201
        refused = c.post("/api/v1/deployments", json=base)
        not_bool = c.post("/api/v1/deployments", json={**base, "unsigned": "yes"})
        taken = c.post("/api/v1/deployments", json={**base, "unsigned": True})
    assert refused.status_code == 409 and "--unsigned" in refused.json()["message"], refused.text
    assert not_bool.status_code == 422
    assert taken.status_code == 200 and taken.json()["built"], taken.text
