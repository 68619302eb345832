"""A bundle file lost from the store is a permanent error for that bundle (issue 11, item 7)."""

from __future__ import annotations

import json

from tests.hub.conftest import LiveHub
from tests.hub.test_device_api import API, image_status


def test_missing_bundle_file_is_410_and_fails_that_device_image(hub: LiveHub) -> None:
    w = hub.world
    w.bundle_path("dev-1").unlink()
    url = f"{API}/bundles/{w.bundles['dev-1']}"
    with hub.device("dev-1") as c:
        r = c.get(url)
        again = c.get(url)
        listed = c.get(API + "/bundles").json()["bundles"]
    assert r.status_code == 410, r.text
    assert r.json()["code"] == "bundle_missing"
    assert r.json()["error"] == "StorageError"
    assert again.status_code == 410
    assert image_status(w, "dev-1", w.v2) == "failed"
    assert listed == []
    with hub.operator() as op:
        shown = json.dumps(op.get("/api/v1/devices/dev-1").json())
    assert "missing from the hub's store" in shown


def test_other_devices_keep_their_bundle(hub: LiveHub) -> None:
    w = hub.world
    w.bundle_path("dev-1").unlink()
    with hub.device("dev-1") as c:
        assert c.get(f"{API}/bundles/{w.bundles['dev-1']}").status_code == 410
    if "dev-2" in w.bundles and w.bundles["dev-2"] != w.bundles["dev-1"]:
        with hub.device("dev-2") as c:
            assert c.get(f"{API}/bundles/{w.bundles['dev-2']}").status_code == 200
