"""POST /api/v1/device/progress against a live hub, on SQLite and PostgreSQL (issue 12).

The hub stores bytes received + when per device image, computes a rate between
reports, refuses hostile input with 422 (never 500), another device's bundle with 403,
an unknown one with 404, and a bundle not in transit any more with 409.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from sqlalchemy import select

from deltaport.fleet.models import Device, DeviceImage, DownloadProgress
from deltaport.fleet.progress import shown
from tests.hub.conftest import OPERATOR_TOKEN, LiveHub, World
from tests.hub.test_device_api import API, db_rows, message


def _post(hub: LiveHub, device: str, doc: Any) -> Any:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with hub.device(device) as c:
        return c.post(API + "/progress", content=body,
                      headers={"Content-Type": "application/json"})


def _report(world: World, received: int, device: str = "dev-1", **extra: Any) -> dict[str, Any]:
    return {"bundle": world.bundles[device], "received": received, "size": world.bundle_size,
            **extra}


def _stored(world: World, device: str = "dev-1") -> tuple[DownloadProgress, DeviceImage] | None:
    rows = db_rows(world, select(DownloadProgress, DeviceImage)
                   .join(DeviceImage, DeviceImage.id == DownloadProgress.device_image_id)
                   .join(Device, Device.id == DeviceImage.device_id)
                   .where(Device.name == device))
    return (rows[0][0], rows[0][1]) if rows else None


def test_reports_are_stored_with_a_rate(any_hub: LiveHub) -> None:
    world = any_hub.world
    r = _post(any_hub, "dev-1", _report(world, 1000, resumed=True))
    assert r.status_code == 200, r.text
    assert r.json() == {"ok": True, "updated": 1}
    first = _stored(world)
    assert first is not None
    assert first[0].bytes_received == 1000 and first[0].rate_bps is None
    assert shown(first[0], status=first[1].status, bundle_id=first[1].bundle_id,
                 since=first[1].updated_at)
    time.sleep(0.2)
    assert _post(any_hub, "dev-1", _report(world, 101_000)).status_code == 200
    second = _stored(world)
    assert second is not None
    seconds = (second[0].reported_at - first[0].reported_at).total_seconds()
    assert second[0].bytes_received == 101_000
    assert second[0].rate_bps == pytest.approx(100_000 / seconds)
    # a resumed download (a new agent process) starts a new rate sample
    assert _post(any_hub, "dev-1", _report(world, 150_000, resumed=True)).status_code == 200
    third = _stored(world)
    assert third is not None and third[0].rate_bps is None
    assert _stored(world, "dev-2") is None  # dev-2 said nothing


def test_progress_ends_with_the_transit(any_hub: LiveHub) -> None:
    world = any_hub.world
    assert _post(any_hub, "dev-1", _report(world, world.bundle_size)).status_code == 200
    with any_hub.device("dev-1") as c:
        r = c.post(API + "/status", json={"messages": [message(world, "dev-1")]})
    assert r.status_code == 200 and r.json()["accepted"], r.text
    row = _stored(world)
    assert row is not None
    assert not shown(row[0], status=row[1].status, bundle_id=row[1].bundle_id,
                     since=row[1].updated_at)  # present: the dashboard shows 100 %, no report
    r = _post(any_hub, "dev-1", _report(world, 10))
    assert r.status_code == 409 and r.json()["error"] == "StateError", r.text


def test_who_may_report(any_hub: LiveHub) -> None:
    world = any_hub.world
    r = _post(any_hub, "dev-1", _report(world, 10, device="dev-2"))  # dev-2's bundle
    assert r.status_code == 403 and r.json()["error"] == "AccessError", r.text
    r = _post(any_hub, "dev-1", {**_report(world, 10), "bundle": "sha256:" + "0" * 64})
    assert r.status_code == 404, r.text
    with any_hub.client() as c:
        assert c.post(API + "/progress", json=_report(world, 10)).status_code == 401
    assert _stored(world) is None


HOSTILE: list[Any] = [
    {"received": -1}, {"received": "10"}, {"received": True}, {"received": 1.5},
    {"received": None}, {"size": 0}, {"size": -5}, {"resumed": "yes"},
    {"bundle": "sha256:XYZ"}, {"bundle": 7}, {"bundle": None},
]


def test_hostile_fields_are_422(hub: LiveHub) -> None:
    for change in HOSTILE:
        r = _post(hub, "dev-1", {**_report(hub.world, 10), **change})
        assert r.status_code == 422 and r.json()["error"] == "FormatError", (change, r.text)


def test_hostile_bodies_are_422(any_hub: LiveHub) -> None:
    world = any_hub.world
    size = world.bundle_size
    bodies = [
        json.dumps(_report(world, size + 1)).encode(),  # more than the bundle
        json.dumps({**_report(world, 10), "size": size + 1}).encode(),  # not the bundle's size
        json.dumps({**_report(world, 10), "size": 2**70, "received": 2**64}).encode(),
        json.dumps(_report(world, 0)).replace('"received": 0', '"received": ' + "9" * 5000)
        .encode(),
        b"[1, 2]", b"not json", b"{" * 100_000, b"\xff\xfe",
        json.dumps({**_report(world, 10), "pad": "x" * 5000}).encode(),  # over the limit
        json.dumps(_report(world, 10)).replace(world.bundles["dev-1"], "a\\ud800").encode(),
    ]
    for body in bodies:
        r = _post(any_hub, "dev-1", body)
        assert r.status_code == 422 and r.json()["error"] == "FormatError", (body[:80], r.text)
    assert _stored(world) is None


def _live_rows(hub: LiveHub) -> dict[str, str]:
    """The deployment page's live part, signed in as the operator: row HTML per device."""
    with hub.client() as c:
        form = c.get("/ui/login")
        nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
        assert nonce is not None, form.text
        c.post("/ui/login", data={"token": OPERATOR_TOKEN, "nonce": nonce.group(1),
                                  "next": "/ui/"})
        page = c.get(f"/ui/live/deployments/{hub.world.deployment}")
    assert page.status_code == 200, page.text
    return {m.group(1): m.group(0) for m in re.finditer(
        r'<tr data-device="([^"]+)".*?</tr>', page.text, re.S)}


def test_the_dashboard_shows_reports_and_estimates_elsewhere(any_hub: LiveHub) -> None:
    world = any_hub.world
    assert _post(any_hub, "dev-1", _report(world, 100_000)).status_code == 200
    time.sleep(0.3)
    assert _post(any_hub, "dev-1", _report(world, world.bundle_size // 2)).status_code == 200
    rows = _live_rows(any_hub)
    mine, other = rows["dev-1"], rows["dev-2"]
    assert f'data-received="{world.bundle_size // 2}"' in mine
    assert 'value="50"' in mine and "(reported " in mine and "kbit/s" in mine
    assert "(est.)" not in mine
    assert "data-received" not in other and "(est.)" in other and "link rate" in other
    with any_hub.device("dev-1") as c:  # arrived: 100 %, the report is no longer shown
        assert c.post(API + "/status", json={"messages": [message(world, "dev-1")]}
                      ).status_code == 200
    mine = _live_rows(any_hub)["dev-1"]
    assert 'value="100"' in mine and "data-received" not in mine


def test_openapi_declares_the_progress_call(hub: LiveHub) -> None:
    with hub.client() as c:
        doc = c.get("/openapi.json").json()
    post = doc["paths"]["/api/v1/device/progress"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"bundle", "received", "size"}
    assert schema["properties"]["received"]["minimum"] == 0
    assert schema["properties"]["bundle"]["pattern"]
