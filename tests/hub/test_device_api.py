"""The device API against a live hub (real uvicorn, real SQLite / PostgreSQL)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from deltaport.bundle.keys import load_public_key
from deltaport.desired import DesiredModule, decode_envelope
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.documents import report_digest
from deltaport.fleet.models import DeploymentSet, Device, DeviceImage, Event
from deltaport.hub.client import HubClient
from tests.hub.conftest import OPERATOR_TOKEN, REGISTRY, LiveHub, World

API = "/api/v1/device"


def message(world: World, device: str, status: str = "present", **extra: Any) -> dict[str, Any]:
    doc = {
        "message_id": str(uuid.uuid4()),
        "device": device,
        "image_id": world.v2,
        "status": status,
        "deployment": world.deployment,
        "at": "2026-11-27T19:00:00Z",
        "target": "demo/app:v2",
        "via": "hub",
        "bytes": {"bundle": 1, "downloaded": 1},
    }
    doc.update(extra)
    return doc


def db_rows(world: World, sql: Any) -> Any:
    engine = init_db(world.db_url)
    try:
        with session_scope(engine) as s:
            return s.execute(sql).all()
    finally:
        engine.dispose()


def image_status(world: World, device: str, image_id: str) -> str | None:
    rows = db_rows(
        world,
        select(DeviceImage.status)
        .join(Device, Device.id == DeviceImage.device_id)
        .where(Device.name == device, DeviceImage.image_id == image_id),
    )
    return rows[0][0] if rows else None


# --- who may call ------------------------------------------------------------------


def test_gets_need_a_device_token(any_hub: LiveHub) -> None:
    paths = ["/bundles", "/desired-manifest", f"/bundles/{any_hub.world.bundles['dev-1']}"]
    bad: tuple[dict[str, str], ...] = (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": f"Bearer {OPERATOR_TOKEN}"},
    )
    with any_hub.client() as c:
        for path in paths:
            for headers in bad:
                r = c.get(API + path, headers=headers)
                assert r.status_code == 401, (path, headers, r.text)
                assert r.json()["error"] == "AccessError"
                assert r.headers["WWW-Authenticate"] == "Bearer"


def test_posts_need_a_device_token(any_hub: LiveHub) -> None:
    with any_hub.client("wrong") as c:
        assert c.post(API + "/checkin", json={"inventory": {"images": []}}).status_code == 401
        assert c.post(API + "/status", json={"messages": []}).status_code == 401


def test_a_device_cannot_fetch_another_devices_bundle(any_hub: LiveHub) -> None:
    w = any_hub.world
    with any_hub.device("dev-2") as c:
        other = c.get(f"{API}/bundles/{w.bundles['dev-1']}")
        own = c.get(f"{API}/bundles/{w.bundles['dev-2']}", headers={"Range": "bytes=0-9"})
        unknown = c.get(f"{API}/bundles/sha256:{'a' * 64}")
        garbage = c.get(f"{API}/bundles/not-a-digest")
    assert other.status_code == 403 and other.json()["error"] == "AccessError"
    assert own.status_code == 206 and len(own.content) == 10
    assert unknown.status_code == 404 and garbage.status_code == 404


def test_a_device_cannot_report_for_another(any_hub: LiveHub) -> None:
    w = any_hub.world
    batch = [message(w, "dev-2"), message(w, "dev-1")]  # dev-2 sends one for dev-1 too
    with any_hub.device("dev-2") as c:
        r = c.post(API + "/status", json={"messages": batch})
    assert r.status_code == 403 and "dev-1" in r.json()["message"]
    assert image_status(w, "dev-1", w.v2) == "in_transit"
    assert image_status(w, "dev-2", w.v2) == "in_transit"  # nothing of the batch applied


# --- bundles -------------------------------------------------------------------------


def test_each_device_lists_only_its_own_bundle(hub: LiveHub) -> None:
    w = hub.world
    for device in ("dev-1", "dev-2"):
        with hub.device(device) as c:
            offers = c.get(API + "/bundles").json()["bundles"]
        assert len(offers) == 1
        offer = offers[0]
        assert offer["digest"] == w.bundles[device]
        assert offer["url"] == f"{API}/bundles/{w.bundles[device]}"
        assert offer["size"] == w.bundle_size and offer["image_id"] == w.v2
        assert offer["target"] == "cloud.example:5000/demo/app:v2"
        assert offer["deployment"] == w.deployment and offer["priority"] == 0
    # once dev-1 reports the image present, its bundle is no longer offered
    with hub.device("dev-1") as c:
        assert c.post(API + "/status", json={"messages": [message(w, "dev-1")]}).status_code == 200
        assert c.get(API + "/bundles").json() == {"bundles": []}


def test_offers_are_ordered_by_priority_then_creation_time(any_hub: LiveHub) -> None:
    """An urgent deployment made after a routine one is offered first; ties keep age order."""
    w = any_hub.world
    ids = {"v2": w.v2}
    with HubClient(any_hub.url, OPERATOR_TOKEN, timeout=30) as hc:
        for tag in ("v3", "v4", "v5"):
            w.registry.add(f"{REGISTRY}/demo/app:{tag}", ["base", "lib1", f"app-{tag}"])
            ids[tag] = hc.register_image(f"docker://{REGISTRY}/demo/app:{tag}")["image_id"]
        deps = {"v2": w.deployment}
        # deployed in the order v5, v3, v4: creation order differs from priority order
        for tag, priority in (("v5", 7), ("v3", -3), ("v4", 0)):
            compose = f"services:\n  app:\n    image: {REGISTRY}/demo/app:{tag}\n"
            result = hc.deploy(
                compose, by="ops", email="ops@example.com", devices=["dev-2"], priority=priority
            )
            assert result["priority"] == priority
            deps[tag] = result["deployment"]
        assert hc.deployment(deps["v3"])["priority"] == -3
        assert hc.deployment(w.deployment)["priority"] == 0
    with any_hub.device("dev-2") as c:
        offers = c.get(API + "/bundles").json()["bundles"]
    got = [(o["image_id"], o["priority"], o["deployment"]) for o in offers]
    assert got == [
        (ids["v3"], -3, deps["v3"]),  # most urgent, though deployed after v5
        (ids["v2"], 0, deps["v2"]),  # priority 0: the older deployment first
        (ids["v4"], 0, deps["v4"]),
        (ids["v5"], 7, deps["v5"]),  # deployed first, downloaded last
    ]


def test_deferred_failure_keeps_the_offer_final_failure_removes_it(hub: LiveHub) -> None:
    w = hub.world
    with hub.device("dev-1") as c:
        c.post(
            API + "/status",
            json={"messages": [message(w, "dev-1", "failed", reason="deferred: not enough disk")]},
        )
        assert len(c.get(API + "/bundles").json()["bundles"]) == 1
        c.post(
            API + "/status",
            json={
                "messages": [
                    message(w, "dev-1", "failed", reason="missing source layers: sha256:…")
                ]
            },
        )
        assert c.get(API + "/bundles").json()["bundles"] == []


def test_bundle_ranges(hub: LiveHub) -> None:
    w = hub.world
    data = w.bundle_path("dev-1").read_bytes()
    size = len(data)
    url = f"{API}/bundles/{w.bundles['dev-1']}"
    with hub.device("dev-1") as c:
        whole = c.get(url)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["accept-ranges"] == "bytes"
        assert "content-encoding" not in whole.headers
        mid = c.get(url, headers={"Range": "bytes=1000-70999"})
        assert mid.status_code == 206 and mid.content == data[1000:71000]
        assert mid.headers["content-range"] == f"bytes 1000-70999/{size}"
        assert mid.headers["content-length"] == "70000"
        tail = c.get(url, headers={"Range": f"bytes={size - 5}-"})
        assert tail.status_code == 206 and tail.content == data[-5:]
        suffix = c.get(url, headers={"Range": "bytes=-7"})
        assert suffix.content == data[-7:]
        past = c.get(url, headers={"Range": f"bytes={size}-"})
        assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
        over = c.get(url, headers={"Range": f"bytes={size - 3}-{size + 100}"})
        assert over.status_code == 206 and over.content == data[-3:]


# --- status messages -----------------------------------------------------------------


def test_same_status_message_three_times_changes_state_once(any_hub: LiveHub) -> None:
    w = any_hub.world
    msg = message(w, "dev-1")
    with any_hub.device("dev-1") as c:
        answers = [c.post(API + "/status", json={"messages": [msg]}) for _ in range(3)]
        both = c.post(API + "/status", json={"messages": [msg, msg]})
    for r in [*answers, both]:
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == [msg["message_id"]]
    assert image_status(w, "dev-1", w.v2) == "present"
    events = db_rows(w, select(func.count()).where(Event.message_id == msg["message_id"]))
    assert events[0][0] == 1
    changes = db_rows(
        w, select(func.count()).where(Event.image_id == w.v2, Event.to_status == "present")
    )
    assert changes[0][0] == 1


def test_rejected_messages_are_not_accepted(hub: LiveHub) -> None:
    w = hub.world
    good = message(w, "dev-1")
    bad = message(w, "dev-1", deployment="d-unknown")
    with hub.device("dev-1") as c:
        r = c.post(API + "/status", json={"messages": [good, bad]})
        malformed = c.post(API + "/status", json={"messages": [{"device": "dev-1"}]})
        not_json = c.post(API + "/status", content=b"{", headers={"Content-Type": "text/plain"})
    assert r.status_code == 200
    assert r.json()["accepted"] == [good["message_id"]]
    assert [x["message_id"] for x in r.json()["rejected"]] == [bad["message_id"]]
    assert malformed.status_code == 422 and malformed.json()["error"] == "FormatError"
    assert not_json.status_code == 422


def test_oversized_body_is_refused(hub: LiveHub) -> None:
    with hub.device("dev-1") as c:
        r = c.post(API + "/checkin", content=b" " * (9 * 1024 * 1024))
    assert r.status_code == 422 and "larger than" in r.json()["message"]


# --- check-in ------------------------------------------------------------------------


def test_checkin_records_the_inventory(any_hub: LiveHub) -> None:
    w = any_hub.world
    foreign = "sha256:" + "f" * 64
    inv = {
        "images": [
            {"image_id": w.v1, "name": "demo/app:v1"},
            {"image_id": w.v2, "name": "demo/app:v2"},
            {"image_id": foreign, "name": "other/thing:1"},
        ]
    }
    with any_hub.device("dev-2") as c:
        r = c.post(API + "/checkin", json={"inventory": inv})
        assert r.status_code == 200, r.text
        assert r.json() == {"ok": True, "ignored": [foreign]}
        assert image_status(w, "dev-2", w.v1) == "present"
        assert image_status(w, "dev-2", w.v2) == "present"
        r = c.post(API + "/checkin", json={"inventory": {"images": [{"image_id": w.v2}]}})
        assert r.status_code == 200
    assert image_status(w, "dev-2", w.v1) == "removed"
    assert image_status(w, "dev-2", w.v2) == "present"
    seen = db_rows(w, select(Device.last_seen).where(Device.name == "dev-2"))
    assert seen[0][0] is not None
    with any_hub.device("dev-2") as c:
        bad = c.post(API + "/checkin", json={"inventory": {"images": [{"image_id": "x"}]}})
    assert bad.status_code == 422


# --- desired manifest ----------------------------------------------------------------


def test_desired_manifest_after_activation(any_hub: LiveHub) -> None:
    w = any_hub.world
    with any_hub.device("dev-1") as d1, any_hub.device("dev-2") as d2, any_hub.operator() as op:
        assert d1.get(API + "/desired-manifest").status_code == 404
        assert d1.post(API + "/status", json={"messages": [message(w, "dev-1")]}).is_success
        early = op.post(f"/api/v1/deployments/{w.deployment}/activate")
        assert early.status_code == 409 and "dev-2" in early.json()["message"]
        assert d1.get(API + "/desired-manifest").status_code == 404
        # the last device reports: the set completes and is activated by the event handler
        assert d2.post(API + "/status", json={"messages": [message(w, "dev-2")]}).is_success
        r = d1.get(API + "/desired-manifest")
        assert r.status_code == 200, r.text
        trusted = [load_public_key(w.manifest_public_key)]
        doc = decode_envelope(r.content, trusted, device="dev-1")
        assert doc.deployment == w.deployment and doc.version == 1
        assert doc.modules == (DesiredModule("app", "localhost:5000/cloud.example_5000/demo/app:v2",
                                             w.v2),)
        assert decode_envelope(d2.get(API + "/desired-manifest").content, trusted, device="dev-2")
        etag = r.headers["etag"]
        again = d1.get(API + "/desired-manifest", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.headers["etag"] == etag
        stale = d1.get(API + "/desired-manifest", headers={"If-None-Match": '"other"'})
        assert stale.status_code == 200 and stale.content == r.content
        # activating again (operator) is allowed and publishes a new, higher version
        answer = op.post(f"/api/v1/deployments/{w.deployment}/activate")
        assert answer.status_code == 200 and answer.json()["versions"] == {"dev-1": 2, "dev-2": 2}
        newer = d1.get(API + "/desired-manifest", headers={"If-None-Match": etag})
        assert newer.status_code == 200 and newer.headers["etag"] != etag
        assert decode_envelope(newer.content, trusted, device="dev-1").version == 2
    state = db_rows(w, select(DeploymentSet.state).where(DeploymentSet.id == w.deployment))
    assert state[0][0] == "active"


def test_completion_email_through_real_smtp(world: World, smtp_server: Any) -> None:
    from deltaport.config import SmtpSettings
    from tests.hub.conftest import fake_toolkit, hub_in_thread

    smtp = SmtpSettings(host=smtp_server.host, port=smtp_server.port)
    settings = world.settings(smtp=smtp)
    with hub_in_thread(settings, toolkit=fake_toolkit(world.registry)) as url:
        live = LiveHub(url, world, fake_toolkit(world.registry))
        for device in ("dev-1", "dev-2"):
            with live.device(device) as c:
                msg = {"messages": [message(world, device)]}
                for _ in range(2):  # a lost answer: the same message again
                    assert c.post(API + "/status", json=msg).status_code == 200
    subjects = [m["Subject"] for m in smtp_server.messages()]
    assert subjects == [f"deltaport: deployment {world.deployment} complete"]
    assert smtp_server.messages()[0]["To"] == "alice@example.com"


# --- device runtime (docs/device-runtime.md) -----------------------------------------


def test_offers_announce_their_source_images(any_hub: LiveHub) -> None:
    w = any_hub.world
    with any_hub.device("dev-1") as d1, any_hub.device("dev-2") as d2:
        (one,) = d1.get(API + "/bundles").json()["bundles"]
        (two,) = d2.get(API + "/bundles").json()["bundles"]
    assert one["sources"] == [w.v1]  # dev-1 rebuilds v2 from its v1: GC must keep v1
    assert two["sources"] == []  # dev-2 had nothing


def test_activation_and_removed_messages_over_http(any_hub: LiveHub) -> None:
    w = any_hub.world
    with any_hub.device("dev-1") as d1, any_hub.device("dev-2") as d2:
        for c, name in ((d1, "dev-1"), (d2, "dev-2")):
            assert c.post(API + "/status", json={"messages": [message(w, name)]}).is_success
        act = {"message_id": str(uuid.uuid4()), "kind": "activation", "device": "dev-1",
               "deployment": w.deployment, "version": 1, "outcome": "rolled_back",
               "reason": "module app exited with code 3", "module": "app", "exit_code": 3,
               "restart_count": 0, "logs": ["boom"]}
        unknown = {**act, "message_id": str(uuid.uuid4()), "deployment": "d-unknown"}
        removed = message(w, "dev-1", "removed", image_id=w.v1, reason="gc: freed 10 bytes")
        r = d1.post(API + "/status", json={"messages": [act, unknown, removed, act]})
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == [act["message_id"], removed["message_id"]]
        assert [x["message_id"] for x in r.json()["rejected"]] == [unknown["message_id"]]
        bad = d1.post(API + "/status", json={"messages": [{**act, "logs": ["x"] * 21}]})
        assert bad.status_code == 422
    assert image_status(w, "dev-1", w.v1) == "removed"
    with HubClient(any_hub.url, OPERATOR_TOKEN) as hc:
        rows = {r["device"]: r["activation"] for r in hc.deployment(w.deployment)["devices"]}
    assert rows["dev-1"]["state"] == "rolled_back" and rows["dev-1"]["detail"]["exit_code"] == 3
    assert rows["dev-2"]["state"] == "delivered" and rows["dev-2"]["published_version"] == 1


def test_runtime_report_and_heartbeat(any_hub: LiveHub) -> None:
    w = any_hub.world
    report = {
        "deployment": {"id": w.deployment, "version": 1},
        "last_attempt": {"id": w.deployment, "version": 1, "outcome": "active", "reason": ""},
        "modules": [{"module": "app", "desired_image_id": w.v2, "running_image_id": w.v2,
                     "runtime_status": "running", "health": "healthy", "exit_code": None,
                     "restart_count": 0, "started_at": "2026-12-02T10:00:00Z",
                     "exited_at": None, "status_description": "up"}],
    }
    digest = report_digest(report)
    with any_hub.device("dev-1") as d1:
        early = d1.post(API + "/runtime", json={"report_digest": digest})
        assert early.status_code == 200 and early.json() == {"known": False}
        stored = d1.post(API + "/runtime", json={"report": report})
        assert stored.status_code == 200 and stored.json() == {"ok": True, "digest": digest}
        assert d1.post(API + "/runtime", json={"report_digest": digest}).json() == {"known": True}
        other = "sha256:" + "0" * 64
        assert d1.post(API + "/runtime", json={"report_digest": other}).json() == {"known": False}
        assert d1.post(API + "/runtime", json={"report": {"modules": "x"}}).status_code == 422
    with HubClient(any_hub.url, OPERATOR_TOKEN) as hc:
        runtime = hc.device("dev-1")["runtime"]
    assert runtime["running"] == {"id": w.deployment, "version": 1}
    assert runtime["report_digest"] == digest
    (app,) = runtime["modules"]
    assert app["running_image_id"] == w.v2 and app["health"] == "healthy"
    assert app["desired_image_id"] is None  # nothing published for dev-1 yet
