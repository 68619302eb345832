"""Bulk writes for the fleet: many rows in few statements, every status change checked.

Recording a deployment to 100,000 devices writes half a million rows. On PostgreSQL
they go through ``COPY`` (psycopg 3's ``cursor.copy``), into the target table or into
a temporary table from which one ``INSERT … SELECT`` / ``UPDATE … FROM`` applies them;
on SQLite through ``executemany`` of one prepared statement.

Status writes are compare-and-set: a device image goes to its new status only if its
row still holds the status the change was decided from (``WHERE status = :before``; an
absent row must still be absent: ``ON CONFLICT DO NOTHING``). The number of rows
written is checked; a shortfall raises :class:`~deltaport.errors.StateError` and the
caller's transaction is rolled back, so nothing decided from a stale view is kept.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from deltaport.errors import StateError
from deltaport.fleet.models import DeviceImage, Event, utcnow
from deltaport.fleet.states import ImageEvent, ImageStatus, next_image_status

EVENT_COLUMNS = (
    "at", "kind", "device_id", "image_id", "deployment_set_id", "from_status", "to_status",
    "detail", "message_id",
)


@dataclass(frozen=True, slots=True)
class ImageWrite:
    """One device image going from BEFORE to AFTER (decided by the state machine)."""

    device_id: int
    image_id: str
    before: ImageStatus
    after: ImageStatus
    bundle_id: int | None = None


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def copy_rows(
    session: Session, table: Table | str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Insert ROWS (tuples in COLUMNS order) into TABLE; the number of rows written.

    PostgreSQL: one ``COPY … FROM STDIN`` in the session's transaction. Otherwise: one
    ``executemany`` of a plain INSERT.
    """
    name = table if isinstance(table, str) else table.name
    if is_postgres(session):
        raw = session.connection().connection.driver_connection
        n = 0
        with raw.cursor() as cur:  # type: ignore[union-attr]
            cols = ", ".join(columns)
            with cur.copy(f"COPY {name} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    n += 1
        return n
    assert not isinstance(table, str), "SQLite bulk inserts need the Table"
    data = [dict(zip(columns, row, strict=True)) for row in rows]
    if data:
        session.execute(insert(table), data)
    return len(data)


def log_events(session: Session, events: Sequence[dict[str, Any]]) -> None:
    """Append EVENTS (dicts keyed by event column; missing keys are NULL) to the log."""
    if not events:
        return
    table = cast(Table, Event.__table__)
    rows = (tuple(e.get(c) for c in EVENT_COLUMNS) for e in events)
    copy_rows(session, table, EVENT_COLUMNS, rows)


def send_images(
    session: Session,
    *,
    sends: Sequence[tuple[int, str, int | None]],
    current: dict[int, dict[str, str]] | Any,
    deployment_set_id: str,
) -> int:
    """Mark many (device id, image ID, bundle id) in_transit, compare-and-set, logging each.

    CURRENT is device id → {image ID: status} as loaded for planning: each change is
    decided by the state machine from it, and written only where the row still holds it.
    Returns the number of device images written.

    Raises:
        StateError: a send is illegal from its planned status, or a device image changed
            since planning (a device reported, a GC removed it, another deploy sent it):
            plan again.
    """
    writes = []
    for device_id, image_id, bundle_id in sends:
        before = ImageStatus(current.get(device_id, {}).get(image_id, ImageStatus.ABSENT.value))
        after = next_image_status(before, ImageEvent.SEND)
        writes.append(ImageWrite(device_id, image_id, before, after, bundle_id))
    writes.sort(key=lambda w: (w.device_id, w.image_id))  # one lock order for every writer
    now = utcnow()
    if is_postgres(session):
        written = _send_postgres(session, writes, deployment_set_id, now)
    else:
        written = _send_sqlite(session, writes, deployment_set_id, now)
    if written != len(writes):
        raise StateError(
            f"{len(writes) - written} of {len(writes)} device images changed while the "
            "deployment was planned (a device reported, or another deployment sent them); "
            "nothing was recorded: deploy again to plan from the new state"
        )
    log_events(session, [
        {"at": now, "kind": "device_image", "device_id": w.device_id, "image_id": w.image_id,
         "deployment_set_id": deployment_set_id, "from_status": w.before.value,
         "to_status": w.after.value}
        for w in writes
    ])
    return written


def _send_postgres(
    session: Session, writes: Sequence[ImageWrite], set_id: str, now: datetime
) -> int:
    tmp = f"dp_send_{secrets.token_hex(4)}"
    conn = session.connection()
    conn.execute(text(
        f"CREATE TEMP TABLE {tmp} (device_id integer, image_id varchar(100), "
        "bundle_id integer, before varchar(20), after varchar(20)) ON COMMIT DROP"
    ))
    copy_rows(session, tmp, ("device_id", "image_id", "bundle_id", "before", "after"), (
        (w.device_id, w.image_id, w.bundle_id, w.before.value, w.after.value) for w in writes
    ))
    conn.execute(text(f"ANALYZE {tmp}"))  # a temp table has no statistics: plan the joins
    absent = ImageStatus.ABSENT.value
    params = {"set_id": set_id, "now": now, "absent": absent}
    inserted = conn.execute(text(
        "INSERT INTO device_images (device_id, image_id, status, bundle_id, "
        "deployment_set_id, created_at, updated_at) "
        f"SELECT device_id, image_id, after, bundle_id, :set_id, :now, :now FROM {tmp} "
        "WHERE before = :absent ORDER BY device_id, image_id "
        "ON CONFLICT (device_id, image_id) DO NOTHING"
    ), params).rowcount
    updated = conn.execute(text(
        f"UPDATE device_images AS d SET status = t.after, bundle_id = t.bundle_id, "
        "deployment_set_id = :set_id, failure_reason = NULL, updated_at = :now "
        f"FROM {tmp} AS t WHERE t.before <> :absent AND d.device_id = t.device_id "
        "AND d.image_id = t.image_id AND d.status = t.before"
    ), params).rowcount
    conn.execute(text(f"DROP TABLE {tmp}"))
    return int(inserted) + int(updated)


def _send_sqlite(
    session: Session, writes: Sequence[ImageWrite], set_id: str, now: datetime
) -> int:
    table = cast(Table, DeviceImage.__table__)
    inserts = [w for w in writes if w.before is ImageStatus.ABSENT]
    updates = [w for w in writes if w.before is not ImageStatus.ABSENT]
    written = 0
    if inserts:
        stmt = sqlite_insert(table).on_conflict_do_nothing(
            index_elements=["device_id", "image_id"]
        )
        written += session.execute(stmt, [
            {"device_id": w.device_id, "image_id": w.image_id, "status": w.after.value,
             "bundle_id": w.bundle_id, "deployment_set_id": set_id, "created_at": now,
             "updated_at": now}
            for w in inserts
        ]).rowcount  # type: ignore[attr-defined]
    if updates:
        stmt2 = (
            update(table)
            .where(table.c.device_id == bindparam("d"), table.c.image_id == bindparam("i"),
                   table.c.status == bindparam("before"))
            .values(bundle_id=bindparam("b"), status=bindparam("s"), deployment_set_id=set_id,
                    failure_reason=None, updated_at=now)
        )
        written += session.execute(stmt2, [
            {"d": w.device_id, "i": w.image_id, "before": w.before.value, "b": w.bundle_id,
             "s": w.after.value}
            for w in updates
        ]).rowcount  # type: ignore[attr-defined]
    return written
