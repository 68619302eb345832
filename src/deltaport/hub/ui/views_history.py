"""Time series: transfers per hour or day, bytes sent vs a layer pull, as charts.

``/ui/history?period=24h|7d|30d&every=hour|day&by=PERSON&label=KEY=VALUE``: the
numbers are in the page twice, as a table (readable without JavaScript) and as JSON in
a ``data-series`` attribute that ``static/charts.js`` draws with uPlot (no inline
script: the CSP allows none).
"""

from __future__ import annotations

import json

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from deltaport.fleet.db import session_scope
from deltaport.fleet.models import utcnow
from deltaport.hub.deps import Hub
from deltaport.hub.ui import queries, series
from deltaport.hub.ui.web import PREFIX, Me, render

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def parse_label(text: str) -> tuple[str, str] | None:
    """``key=value`` → (key, value); anything else → None."""
    key, sep, value = text.partition("=")
    return (key.strip(), value.strip()) if sep and key.strip() else None


@router.get("/history")
def history_page(me: Me, hub: Hub, period: str = "24h", every: str = "hour", by: str = "",
                 label: str = "") -> HTMLResponse:
    """Transfers and bytes over PERIOD, per EVERY, optionally for one person or label."""
    period = period if period in series.PERIODS else "24h"
    width = series.Every(every) if every in {e.value for e in series.Every} else series.Every.HOUR
    now = utcnow()
    f = series.SeriesFilter(since=now - series.PERIODS[period], every=width, by=by or None,
                            label=parse_label(label))
    with session_scope(hub.engine) as session:
        moved = series.transfers(session, f, now)
        sent = series.bytes_sent(session, f, now)
        people = queries.requesters(session)
    rows = [(t, *(v[i] for v in moved.values.values()), *(v[i] for v in sent.values.values()))
            for i, t in enumerate(moved.starts)]
    return render("history.html", {
        "me": me, "nav": "history", "rows": [r for r in rows if any(r[1:])],
        "transfers": json.dumps(moved.chart()), "bytes": json.dumps(sent.chart()),
        "args": {"period": period, "every": width.value, "by": by, "label": label},
        "periods": list(series.PERIODS), "everies": [e.value for e in series.Every],
        "people": people, "totals": {k: sum(v) for k, v in {**moved.values,
                                                             **sent.values}.items()},
    })
