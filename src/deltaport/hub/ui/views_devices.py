"""Devices: the list (search by name or label, sort, paginate) and one device's page.

A device's page shows its images by status, what it runs next to what it should run
(when its agent reports a runtime), its last check-in and link rate, what deltaport
saved on its link, and a timeline of its events (newest first, paginated).
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from deltaport.errors import DeltaportError
from deltaport.fleet import queries as fleet_queries
from deltaport.fleet import status as fleet_status
from deltaport.fleet.db import session_scope
from deltaport.fleet.models import utcnow
from deltaport.hub.deps import Hub
from deltaport.hub.ui import queries
from deltaport.hub.ui.web import CONFIG, PREFIX, Me, error_page, parse_page, render

router = APIRouter(prefix=PREFIX, include_in_schema=False)
EVENTS_PER_PAGE = 30


@router.get("/devices")
def devices_page(me: Me, hub: Hub, q: str = "", sort: str = "name", order: str = "asc",
                 page: str = "1") -> HTMLResponse:
    """Devices matching Q (part of a name or label, or ``key=value``), sorted, one page."""
    sort = sort if sort in queries.DEVICE_SORTS else "name"
    descending = order == "desc"
    with session_scope(hub.engine) as session:
        rows = queries.devices(session, search=q, sort=sort, descending=descending,
                               page=parse_page(page), size=CONFIG.page_size)
        ids = [r[0].id for r in rows.rows]
        counts = queries.image_counts_by_device(session, ids)
        devices = [r[0] for r in rows.rows]
        for d in devices:
            session.expunge(d)
    online_since = utcnow() - timedelta(seconds=CONFIG.online_within_seconds)
    return render("devices.html", {
        "me": me, "nav": "devices", "p": rows, "devices": devices, "counts": counts,
        "q": q, "sort": sort, "order": "desc" if descending else "asc",
        "sorts": list(queries.DEVICE_SORTS), "online_since": online_since,
    })


@router.get("/devices/{name:path}")
def device_page(name: str, me: Me, hub: Hub, page: str = "1") -> HTMLResponse:
    """One device: images, runtime (desired vs running), check-in, savings, events."""
    try:
        with session_scope(hub.engine) as session:
            doc = fleet_status.device_status(session, name)
            device = fleet_queries.get_device(session, name)
            events = queries.device_events(session, device.id, page=parse_page(page),
                                           size=EVENTS_PER_PAGE)
            names = queries.image_names(session, {e[0].image_id for e in events.rows
                                                  if e[0].image_id})
            sent, pulled, saved = queries.savings(session, device_id=device.id)
            timeline = [e[0] for e in events.rows]
            last_seen = device.last_seen
            for e in timeline:
                session.expunge(e)
    except DeltaportError as exc:
        return error_page(exc, me)
    online = last_seen is not None and last_seen >= utcnow() - timedelta(
        seconds=CONFIG.online_within_seconds)
    return render("device.html", {
        "me": me, "nav": "devices", "dev": doc, "last_seen": last_seen, "online": online,
        "events": timeline, "p": events, "names": names, "sent": sent, "pulled": pulled,
        "saved": saved,
    })
