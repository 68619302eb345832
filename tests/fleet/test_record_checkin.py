"""A device's check-in (``device_images.record_checkin``), on SQLite and PostgreSQL.

The hub answers ~170 check-ins a second at 100,000 devices (issue 15): a check-in that
changes nothing costs three statements (known IDs, the device's statuses, last_seen)
and loads no ORM rows; one that changes something goes through the state machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from deltaport.fleet import device_images, queries
from deltaport.fleet.db import session_scope
from deltaport.fleet.documents import Inventory, InventoryEntry
from deltaport.fleet.identity import ImageIdentity
from deltaport.fleet.models import Device, Event

IMG = ["sha256:" + c * 64 for c in "abc"]
FOREIGN = "sha256:" + "f" * 64


def inventory(*ids: str) -> Inventory:
    return Inventory(tuple(InventoryEntry(i) for i in ids))


def setup(engine: Engine) -> int:
    with session_scope(engine) as s:
        for n, image_id in enumerate(IMG):
            queries.register_image(s, name=f"reg.example/app:v{n}", identity=ImageIdentity(
                image_id, "sha256:" + "0" * 64, ("sha256:" + "1" * 64,), (10,)))
        device, _ = queries.add_device(s, name="dev-1", link_rate_bps=1_000_000)
        return device.id


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: object, cursor: object, sql: str, *args: object) -> None:
        seen.append(sql)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def check_in(engine: Engine, device_id: int, *ids: str) -> list[str]:
    with session_scope(engine) as s:
        return device_images.record_checkin(s, device_id=device_id, inventory=inventory(*ids))


def test_checkin_records_known_images_and_ignores_foreign_ones(engine: Engine) -> None:
    device_id = setup(engine)
    assert check_in(engine, device_id, IMG[0], IMG[1], FOREIGN) == [FOREIGN]
    with session_scope(engine) as s:
        statuses = device_images.device_statuses(s, [device_id])[device_id]
        seen = s.scalar(select(Device.last_seen).where(Device.id == device_id))
    assert statuses == {IMG[0]: "present", IMG[1]: "present"}
    assert seen is not None
    # IMG[1] gone from the registry, IMG[2] new: the state machine logs both
    assert check_in(engine, device_id, IMG[0], IMG[2]) == []
    with session_scope(engine) as s:
        statuses = device_images.device_statuses(s, [device_id])[device_id]
        logged = s.execute(select(Event.image_id, Event.to_status).where(
            Event.device_id == device_id).order_by(Event.id)).tuples().all()
    assert statuses == {IMG[0]: "present", IMG[1]: "removed", IMG[2]: "present"}
    assert logged == [(IMG[0], "present"), (IMG[1], "present"), (IMG[2], "present"),
                      (IMG[1], "removed")]


def test_a_steady_checkin_costs_three_statements(engine: Engine) -> None:
    device_id = setup(engine)
    check_in(engine, device_id, IMG[0], IMG[1])
    with statements(engine) as seen:
        assert check_in(engine, device_id, IMG[0], IMG[1], FOREIGN) == [FOREIGN]
    work = [q for q in seen if not q.lstrip().upper().startswith(("BEGIN", "COMMIT", "SELECT 1"))]
    assert len(work) == 3, work
    assert "images" in work[0] and "device_images" in work[1] and "UPDATE devices" in work[2]
