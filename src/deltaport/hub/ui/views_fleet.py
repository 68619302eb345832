"""The fleet overview: devices by state, deployments in progress, failures, bytes saved.

``GET /ui/`` is the page; ``GET /ui/live/overview`` its numbers alone, which the page
polls (htmx) so they move without a reload.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from deltaport.fleet.db import session_scope
from deltaport.fleet.models import utcnow
from deltaport.hub.deps import Hub
from deltaport.hub.ui import queries
from deltaport.hub.ui.web import CONFIG, PREFIX, Me, redirect, render

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _overview(hub: Hub) -> queries.Overview:
    with session_scope(hub.engine) as session:
        return queries.overview(session, now=utcnow(),
                                online_within=timedelta(seconds=CONFIG.online_within_seconds))


@router.get("")
def root() -> Response:
    """``/ui`` → ``/ui/``."""
    return redirect(PREFIX + "/")


@router.get("/")
def overview_page(me: Me, hub: Hub) -> HTMLResponse:
    """The fleet overview."""
    return render("overview.html", {"me": me, "o": _overview(hub), "nav": "overview"})


@router.get("/live/overview")
def overview_live(me: Me, hub: Hub) -> HTMLResponse:
    """The overview's numbers (polled by the page)."""
    return render("_overview_numbers.html", {"me": me, "o": _overview(hub)})
