"""Faster reads of the dashboard (issue 12), with the same numbers as the slow way."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import inspect, text

from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.models import Device, DeviceImage, utcnow
from deltaport.fleet.states import ImageStatus
from deltaport.hub.ui import queries
from tests.hub.conftest import World


def test_devices_updating_and_failed_are_counted_through_an_index(db_url: str) -> None:
    engine = init_db(db_url)
    try:
        indexes = {tuple(ix["column_names"])
                   for ix in inspect(engine).get_indexes("device_images")}
        assert ("status", "device_id") in indexes
        statuses = [ImageStatus.IN_TRANSIT, ImageStatus.FAILED, ImageStatus.PRESENT]
        with session_scope(engine) as s:
            for n in range(12):
                dev = Device(name=f"dev-{n}", token_hash=f"h{n}", link_rate_bps=9600)
                s.add(dev)
                s.flush()
                for k in range(n % 4):  # 0 to 3 images, statuses in turn
                    s.add(DeviceImage(device_id=dev.id, image_id=f"sha256:{k}",
                                      status=statuses[(n + k) % 3].value))
        with engine.connect() as conn:
            by_status = dict(conn.execute(text(
                "SELECT status, count(DISTINCT device_id) FROM device_images"
                " GROUP BY status")).tuples().all())
            if engine.dialect.name == "sqlite":
                plan = conn.execute(text(
                    "EXPLAIN QUERY PLAN SELECT DISTINCT status, device_id FROM device_images"
                    " WHERE status IN ('in_transit', 'failed')")).all()
                assert any("ix_device_images_status_device" in str(r) for r in plan), plan
        with session_scope(engine) as s:
            shown = queries.overview(s, now=utcnow(), online_within=timedelta(seconds=180))
        assert shown.devices == 12
        assert shown.updating == by_status[ImageStatus.IN_TRANSIT.value]
        assert shown.failed == by_status[ImageStatus.FAILED.value]
    finally:
        engine.dispose()


def test_a_page_of_one_status_counts_as_the_status_counts(any_world: World) -> None:
    """The rows of one status are as many as its count on top: the pages reuse it."""
    engine = init_db(any_world.db_url)
    try:
        with session_scope(engine) as s:
            dev = s.query(Device).filter_by(name="dev-2").one()
            s.query(DeviceImage).filter_by(device_id=dev.id).update(
                {"status": ImageStatus.FAILED.value, "failure_reason": "disk full"})
        with session_scope(engine) as s:
            counts = queries.deployment_counts(s, any_world.deployment)
            assert counts.get(ImageStatus.FAILED.value, 0) >= 1
            for status in [st.value for st in ImageStatus]:
                counted = queries.deployment_cells(s, any_world.deployment, status=status,
                                                   page=1, size=50)
                reused = queries.deployment_cells(s, any_world.deployment, status=status,
                                                  page=1, size=50, counts=counts)
                assert reused.total == counted.total == counts.get(status, 0), status
                assert reused.rows == counted.rows
            image_id = any_world.v2
            by_status = queries.image_counts(s, image_id)
            for wanted in [None, *(st.value for st in ImageStatus)]:
                counted = queries.image_devices(s, image_id, status=wanted, page=1, size=50)
                reused = queries.image_devices(s, image_id, status=wanted, page=1, size=50,
                                               counts=by_status)
                assert reused.total == counted.total and reused.rows == counted.rows, wanted
    finally:
        engine.dispose()
