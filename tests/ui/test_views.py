"""The dashboard's pages and actions through the real app, on SQLite and PostgreSQL.

Numbers shown are checked against the database read another way (the CLI's
``fleet.status`` functions or plain counts); actions against the rows they change and
the audit log.
"""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from deltaport.fleet import device_images
from deltaport.fleet import queries as fq
from deltaport.fleet import status as fleet_status
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.models import AuditEntry, DeploymentSet, Device, DeviceImage, Event
from deltaport.fleet.states import ImageEvent
from tests.hub.conftest import OPERATOR_TOKEN, World
from tests.ui.conftest import csrf_of, sign_in
from tests.ui.test_roles import VIEWER_TOKEN

XSS_NAME = "<img src=x onerror=alert(1)>"


def _number(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', page)
    assert found is not None, element_id
    return found.group(1).strip()


def _fail(world: World, device: str) -> None:
    engine = init_db(world.db_url)
    try:
        with session_scope(engine) as s:
            dev = fq.get_device(s, device)
            device_images.transition_image(s, device_id=dev.id, image_id=world.v2,
                                           event=ImageEvent.FAILED, reason="disk full <b>!</b>")
    finally:
        engine.dispose()


def _add_devices(world: World, names: list[str], labels: dict[str, str] | None = None) -> None:
    """Add devices; a name the CLI would refuse (script in it) goes in as a raw row."""
    engine = init_db(world.db_url)
    try:
        with session_scope(engine) as s:
            for name in names:
                if fq.DEVICE_NAME.fullmatch(name):
                    fq.add_device(s, name=name, link_rate_bps=64_000, labels=labels or {})
                else:
                    s.add(Device(name=name, token_hash=fq.hash_token(name), link_rate_bps=64_000,
                                 labels=labels or {}))
    finally:
        engine.dispose()


def test_the_numbers_shown_are_the_databases(ui: TestClient, any_world: World) -> None:
    _fail(any_world, "dev-2")
    assert sign_in(ui).status_code == 303
    overview = ui.get("/ui/").text
    engine = init_db(any_world.db_url)
    try:
        with session_scope(engine) as s:
            doc = fleet_status.deployment_status(s, any_world.deployment)
            failures = s.scalar(select(func.count()).select_from(Event)
                                .where(Event.to_status == "failed"))
            transit = s.scalar(select(func.count(func.distinct(DeviceImage.device_id)))
                               .where(DeviceImage.status == "in_transit"))
    finally:
        engine.dispose()
    assert _number(overview, "n-devices") == "2"
    assert _number(overview, "n-online") == "1"  # dev-1 checked in (its inventory)
    assert _number(overview, "n-failed") == "1"
    assert _number(overview, "n-updating") == str(transit) == "1"
    assert _number(overview, "n-failures-24h") == str(failures) == "1"
    assert _number(overview, "n-in-progress") == "1"
    sent = re.search(r'id="bytes-sent" data-bytes="(\d+)"', overview)
    assert sent is not None and int(sent.group(1)) == 2 * any_world.bundle_size
    page = ui.get(f"/ui/deployments/{any_world.deployment}").text
    for status, n in doc["counts"].items():
        assert _number(page, f"count-{status}") == str(n)
    assert "disk full &lt;b&gt;!&lt;/b&gt;" in page  # the reason, as text
    live = ui.get(f"/ui/live/deployments/{any_world.deployment}?status=failed").text
    assert live.count("<tr data-device") == 1 and 'data-device="dev-2"' in live
    image = ui.get("/ui/images/" + doc["images"][0]).text
    assert _number(image, "count-in_transit") == "1" and _number(image, "count-failed") == "1"
    device = ui.get("/ui/devices/dev-2").text
    assert "in_transit → <span class=\"s-failed\">failed</span>" in device  # the timeline


def test_filters_search_and_pages(ui: TestClient, any_world: World) -> None:
    _add_devices(any_world, [f"truck-{i:03d}" for i in range(55)], {"fleet": "north"})
    _add_devices(any_world, ["ship-1", XSS_NAME], {"fleet": "sea", "note": "<script>x()</script>"})
    sign_in(ui)
    first = ui.get("/ui/devices?q=truck").text
    assert first.count("<tr data-device") == 50 and "page 1 of 2 (55 rows)" in first
    second = ui.get("/ui/devices?q=truck&page=2").text
    assert second.count("<tr data-device") == 5 and "truck-054" in second
    by_label = ui.get("/ui/devices?q=fleet%3Dsea").text
    assert by_label.count("<tr data-device") == 2
    assert "&lt;img src=x onerror=alert(1)&gt;" in by_label and XSS_NAME not in by_label
    assert "&lt;script&gt;x()&lt;/script&gt;" in by_label and "<script>x" not in by_label
    newest = ui.get("/ui/devices?sort=created&order=desc").text
    assert newest.index("ship-1") < newest.index("truck-054") and "truck-000" not in newest
    assert ui.get("/ui/deployments?by=alice").text.count(any_world.deployment) >= 1
    assert any_world.deployment not in ui.get("/ui/deployments?by=bob").text
    assert any_world.deployment not in ui.get("/ui/deployments?state=active").text
    assert any_world.deployment not in ui.get("/ui/deployments?since=2999-01-01").text
    assert any_world.deployment in ui.get("/ui/deployments?until=2999-01-01").text
    assert ui.get("/ui/devices/nobody").status_code == 404


def _status(world: World, device: str) -> str:
    engine = init_db(world.db_url)
    try:
        with session_scope(engine) as s:
            return device_images.device_statuses(s, [fq.get_device(s, device).id])[
                fq.get_device(s, device).id][world.v2]
    finally:
        engine.dispose()


def _audit(world: World) -> list[tuple[str, str, str | None, int]]:
    engine = init_db(world.db_url)
    try:
        with session_scope(engine) as s:
            return [(a.operator, a.action, a.target, a.outcome)
                    for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    finally:
        engine.dispose()


def test_retry_asks_first_then_acts_and_is_audited(ui: TestClient, any_world: World) -> None:
    _fail(any_world, "dev-2")
    sign_in(ui)
    csrf = csrf_of(ui.get("/ui/devices/dev-2").text)
    form = {"csrf": csrf, "device": "dev-2", "image_id": any_world.v2}
    asked = ui.post("/ui/actions/retry", data=form)
    assert asked.status_code == 200 and 'name="confirmed" value="yes"' in asked.text
    assert _status(any_world, "dev-2") == "failed"  # nothing happened yet
    assert ui.post("/ui/actions/retry", data={**form, "csrf": "forged",
                                              "confirmed": "yes"}).status_code == 403
    assert _status(any_world, "dev-2") == "failed"
    done = ui.post("/ui/actions/retry", data={**form, "confirmed": "yes"})
    assert done.status_code == 303 and done.headers["location"] == "/ui/devices/dev-2"
    assert _status(any_world, "dev-2") == "in_transit"
    again = ui.post("/ui/actions/retry", data={**form, "confirmed": "yes"})
    assert again.status_code == 409  # not failed any more
    assert _audit(any_world) == [("ops", "device_image.retry", f"dev-2 {any_world.v2}", 200),
                                 ("ops", "device_image.retry", f"dev-2 {any_world.v2}", 409)]
    api = ui.get("/api/v1/audit", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert api.status_code == 200, api.text  # the API's audit log reads the dashboard's words
    assert [e["action"] for e in api.json()] == ["device_image.retry"] * 2


def test_a_viewer_sees_no_buttons_and_is_refused(ui: TestClient, any_world: World) -> None:
    _fail(any_world, "dev-2")
    sign_in(ui, token=VIEWER_TOKEN)
    page = ui.get(f"/ui/deployments/{any_world.deployment}").text
    assert "vera (viewer)" in page
    assert "actions/retry" not in page and "actions/activate" not in page
    form = {"csrf": csrf_of(page), "device": "dev-2", "image_id": any_world.v2,
            "confirmed": "yes"}
    assert ui.post("/ui/actions/retry", data=form).status_code == 403
    refused = ui.post("/ui/actions/activate", data={"csrf": form["csrf"], "confirmed": "yes",
                                                    "deployment": any_world.deployment})
    assert refused.status_code == 403 and "viewer" in refused.text
    assert _status(any_world, "dev-2") == "failed" and _audit(any_world) == []


def test_activate_before_arrival_is_refused_and_audited(ui: TestClient, any_world: World) -> None:
    sign_in(ui)
    csrf = csrf_of(ui.get("/ui/").text)
    form = {"csrf": csrf, "deployment": any_world.deployment, "confirmed": "yes"}
    answer = ui.post("/ui/actions/activate", data=form)
    assert answer.status_code == 409 and "dev-2" in answer.text
    assert _audit(any_world) == [("ops", "deployment.activate", any_world.deployment, 409)]


def test_cancel_stops_the_offers_and_is_audited(ui: TestClient, any_world: World) -> None:
    sign_in(ui)
    page = ui.get(f"/ui/deployments/{any_world.deployment}").text
    assert "actions/cancel" in page
    form = {"csrf": csrf_of(page), "deployment": any_world.deployment}
    assert 'value="yes"' in ui.post("/ui/actions/cancel", data=form).text  # asks first
    assert _status(any_world, "dev-1") == "in_transit"
    assert ui.post("/ui/actions/cancel", data={**form, "confirmed": "yes"}).status_code == 303
    assert _status(any_world, "dev-1") == _status(any_world, "dev-2") == "failed"
    with TestClient(ui.app) as device:  # the agents are offered nothing any more
        for name in ("dev-1", "dev-2"):
            offers = device.get("/api/v1/device/bundles",
                                headers={"Authorization": f"Bearer {any_world.tokens[name]}"})
            assert offers.status_code == 200 and offers.json()["bundles"] == [], offers.text
    after = ui.get(f"/ui/deployments/{any_world.deployment}").text
    assert _number(after, "set-state") == "failed" and _number(after, "count-failed") == "2"
    assert "cancelled by ops on the dashboard" in after
    assert _audit(any_world) == [("ops", "deployment.cancel", any_world.deployment, 200)]


def test_an_image_the_fleet_knows_nothing_of_counts_as_absent(ui: TestClient,
                                                             any_world: World) -> None:
    engine = init_db(any_world.db_url)
    try:
        with session_scope(engine) as s:
            dev = fq.get_device(s, "dev-2")
            s.query(DeviceImage).filter_by(device_id=dev.id, image_id=any_world.v2).delete()
    finally:
        engine.dispose()
    sign_in(ui)
    page = ui.get(f"/ui/deployments/{any_world.deployment}").text
    assert _number(page, "count-absent") == "1" and _number(page, "count-in_transit") == "1"
    absent = ui.get(f"/ui/deployments/{any_world.deployment}?status=absent").text
    assert absent.count("<tr data-device") == 1 and 'data-device="dev-2"' in absent


def test_a_manifest_with_script_in_it_is_shown_as_text(ui: TestClient, any_world: World) -> None:
    engine = init_db(any_world.db_url)
    try:
        with session_scope(engine) as s:
            dset = s.get(DeploymentSet, any_world.deployment)
            assert dset is not None
            dset.manifest = {**dset.manifest, "note": "</pre><script>alert(3)</script>"}
    finally:
        engine.dispose()
    sign_in(ui)
    page = ui.get(f"/ui/deployments/{any_world.deployment}").text
    assert "<script>alert(3)" not in page and "</pre><script>" not in page
    assert "&lt;/pre&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in page  # there, as text
