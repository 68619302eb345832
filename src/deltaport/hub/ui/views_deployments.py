"""Deployments: the list (filter by person, state, date) and one deployment's page.

A deployment's page shows the counts per status on top and one page of its
(device × image) cells — 50 devices a page, or the cells of one status — with the
bundle's size, the time in the current status, the ETA at the device's link rate, the
failure reason and the activation state. ``/ui/live/deployments/{id}`` is that part
alone, polled by the page while the deployment is in progress.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from deltaport.errors import DeltaportError
from deltaport.fleet import deployment_sets, progress
from deltaport.fleet.db import session_scope
from deltaport.fleet.models import utcnow
from deltaport.fleet.states import ImageStatus, SetState
from deltaport.hub.deps import Hub
from deltaport.hub.ui import queries
from deltaport.hub.ui.sessions import SignedIn
from deltaport.hub.ui.web import CONFIG, PREFIX, Me, error_page, parse_page, render

router = APIRouter(prefix=PREFIX, include_in_schema=False)
STATUSES = [s.value for s in ImageStatus]
SET_STATES = [s.value for s in SetState]


def parse_day(text: str | None) -> datetime | None:
    """A ``YYYY-MM-DD`` filter value as UTC midnight; None if empty or not a date."""
    if not text:
        return None
    try:
        return datetime.strptime(text[:10], "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None


@router.get("/deployments")
def deployments_page(me: Me, hub: Hub, by: str = "", state: str = "", since: str = "",
                     until: str = "", page: str = "1") -> HTMLResponse:
    """Deployments, newest first, filtered by who ordered them, state and day."""
    end = parse_day(until)
    f = queries.DeploymentFilter(
        by=by or None, state=state if state in SET_STATES else None,
        since=parse_day(since), until=end + timedelta(days=1) if end else None,
    )
    with session_scope(hub.engine) as session:
        rows = queries.deployments(session, f, page=parse_page(page), size=CONFIG.page_size)
        people = queries.requesters(session)
    args = {"by": by, "state": state, "since": since, "until": until}
    return render("deployments.html", {"me": me, "nav": "deployments", "p": rows,
                                       "people": people, "states": SET_STATES, "args": args})


@dataclass(frozen=True)
class Cell:
    """One device × image of a deployment, as its row shows it."""

    device: str
    image: str
    image_id: str
    status: str
    reason: str | None
    since: datetime | None
    bundle_size: int | None
    link_rate_bps: int
    activation: str
    activation_reason: str | None
    now: datetime
    reported: progress.Reported | None = None  # the agent's own word (issue 12)

    @property
    def seconds_in_status(self) -> float | None:
        return (self.now - self.since).total_seconds() if self.since else None

    @property
    def transfer_seconds(self) -> float | None:
        """The bundle's time on the link at the device's rate."""
        if self.bundle_size is None or self.link_rate_bps <= 0:
            return None
        return self.bundle_size * 8 / self.link_rate_bps

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the reported rate; else at the link rate, from when it was sent."""
        if self.reported is not None:
            return self.reported.eta_seconds(self.bundle_size, self.now)
        total, spent = self.transfer_seconds, self.seconds_in_status
        if self.status != ImageStatus.IN_TRANSIT.value or total is None or spent is None:
            return None
        return max(0.0, total - spent)

    @property
    def progress(self) -> float | None:
        """Fraction of the bundle on the device: 1 once present; estimated in transit."""
        if self.status == ImageStatus.PRESENT.value:
            return 1.0
        if self.reported is not None and self.bundle_size:
            return min(1.0, self.reported.received / self.bundle_size)
        eta, total = self.eta_seconds, self.transfer_seconds
        if eta is None or not total:
            return None
        return min(0.99, 1 - eta / total)


def _activation(row: Any) -> str:
    if row.activation:
        return str(row.activation)
    return "delivered" if row.arrived_at is not None else "pending"


def _cells(rows: Any, now: datetime) -> list[Cell]:
    return [Cell(r.name, r.image, r.image_id, r.status, r.failure_reason, r.updated_at,
                 r.bundle_size, r.link_rate_bps, _activation(r), r.activation_reason, now,
                 progress.reported(r))
            for r in rows]


def _live_context(hub: Hub, me: SignedIn, deployment_id: str, status: str,
                  page: str) -> dict[str, Any]:
    with session_scope(hub.engine) as session:
        dset = deployment_sets.get_deployment_set(session, deployment_id)
        chosen = status if status in STATUSES else None
        counts = queries.deployment_counts(session, deployment_id)
        cells = queries.deployment_cells(session, deployment_id, status=chosen,
                                         page=parse_page(page), size=CONFIG.page_size,
                                         counts=counts)
        activations = queries.activation_counts(session, deployment_id)
        context = {
            "me": me, "d": dset, "counts": counts, "activations": activations,
            "cells": _cells(cells.rows, utcnow()), "p": cells, "status": status,
            "statuses": STATUSES, "live": _in_progress(dset.state, counts),
        }
    return context


def _in_progress(state: str, counts: dict[str, int]) -> bool:
    return state == SetState.PENDING.value or counts.get(ImageStatus.IN_TRANSIT.value, 0) > 0


def _deployment_response(hub: Hub, me: SignedIn, deployment_id: str, status: str, page: str,
                         *, whole: bool) -> HTMLResponse:
    """The deployment's whole page, or (WHOLE false) only its live part."""
    try:
        context = _live_context(hub, me, deployment_id, status, page)
    except DeltaportError as exc:
        return error_page(exc, me)
    if not whole:
        return render("_deployment_live.html", context)
    manifest_text = json.dumps(context["d"].manifest, indent=2, ensure_ascii=False)
    return render("deployment.html", {**context, "nav": "deployments",
                                      "manifest_text": manifest_text})


@router.get("/deployments/{deployment_id}")
def deployment_page(deployment_id: str, me: Me, hub: Hub, status: str = "",
                    page: str = "1") -> HTMLResponse:
    """One deployment: counts, its cells, activation; live while in progress."""
    return _deployment_response(hub, me, deployment_id, status, page, whole=True)


@router.get("/live/deployments/{deployment_id}")
def deployment_live(deployment_id: str, me: Me, hub: Hub, status: str = "",
                    page: str = "1") -> HTMLResponse:
    """The live part of a deployment's page (polled)."""
    return _deployment_response(hub, me, deployment_id, status, page, whole=False)
