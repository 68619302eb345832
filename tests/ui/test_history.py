"""The history page's time series, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re

from fastapi.testclient import TestClient

from deltaport.fleet import device_images
from deltaport.fleet import queries as fq
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.states import ImageEvent
from tests.hub.conftest import World
from tests.ui.conftest import sign_in


def _arrive_and_fail(world: World) -> None:
    engine = init_db(world.db_url)
    try:
        with session_scope(engine) as s:
            for name, event in (("dev-1", ImageEvent.ARRIVED), ("dev-2", ImageEvent.FAILED)):
                dev = fq.get_device(s, name)
                device_images.transition_image(s, device_id=dev.id, image_id=world.v2, event=event)
            fq.get_device(s, "dev-2").labels = {"site": "ship"}
    finally:
        engine.dispose()


def _total(page: str, name: str) -> str:
    found = re.search(rf'id="total-{name}"[^>]*>([^<]*)<', page)
    assert found is not None, name
    return found.group(1)


def test_transfers_and_bytes_per_bucket(ui: TestClient, any_world: World) -> None:
    _arrive_and_fail(any_world)
    sign_in(ui)
    page = ui.get("/ui/history").text
    assert _total(page, "arrived") == "1" and _total(page, "failed") == "1"
    sent = re.search(r'id="total-sent" data-bytes="(\d+)"', page)
    assert sent is not None and int(sent.group(1)) == 2 * any_world.bundle_size
    chart = re.search(r'id="chart-transfers" data-chart="count" data-series="([^"]+)"', page)
    assert chart is not None
    data = json.loads(chart.group(1).replace("&#34;", '"'))
    assert data["labels"] == ["arrived", "failed"] and len(data["x"]) in (24, 25)
    assert [sum(y) for y in data["y"]] == [1, 1]
    assert page.count("<tr><td data-start") == 1  # one bucket with anything in it
    daily = ui.get("/ui/history?period=7d&every=day").text
    assert _total(daily, "arrived") == "1"
    assert _total(ui.get("/ui/history?by=bob").text, "arrived") == "0"
    ship = ui.get("/ui/history?label=site%3Dship").text
    assert _total(ship, "arrived") == "0" and _total(ship, "failed") == "1"
    assert f'data-bytes="{any_world.bundle_size}"' in ship  # dev-2's bundle only
    odd = ui.get("/ui/history?period=1y&every=week")
    assert odd.status_code == 200 and "24h" in odd.text  # unknown choices fall back

