"""Dashboard page times (issue 12): every /ui/ page's server time on a PostgreSQL fleet.

    nice -n 10 .venv/bin/python bench/ui_bench.py --devices 10000 [--pg-url URL] \\
        [--repeat 5] [--json bench/ui_results.json] [--reuse]

Builds the fleet of ``bench/plan_bench.py`` (DEVICES devices, each with its present
images) on a throwaway PostgreSQL 15 (or --pg-url), records one 5-image deployment to
all of them (``bench/scale_bench.py``'s plan_and_record: device images in transit, one
event each), then fails 5 % of the device images and marks half the devices checked
in. Each page is fetched REPEAT times in this process through the real app
(Starlette's test client, a signed-in session) and its time reported: median and max,
in milliseconds. The target of the issue is < 300 ms at 100,000 devices. With --reuse
(and --pg-url), the fleet a run before built there is timed again, not rebuilt.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient
from sqlalchemy import text

from bench.plan_bench import populate, postgres_server
from bench.scale_bench import plan_and_record
from deltaport.config import Settings
from deltaport.fleet.db import init_db, session_scope
from deltaport.hub.app import create_app
from deltaport.hub.settings import HubServerSettings, OperatorToken
from deltaport.hub.ui.sessions import COOKIE, open_session

TARGET_MS = 300.0


def degrade(engine: Any) -> None:
    """Fail 5 % of the device images in transit, mark half the devices checked in."""
    with engine.begin() as conn:
        conn.execute(text(
            "UPDATE device_images SET status = 'failed', failure_reason = 'bench: no space' "
            "WHERE status = 'in_transit' AND id % 20 = 0"))
        conn.execute(text(
            "INSERT INTO events (at, kind, device_id, image_id, deployment_set_id, from_status,"
            " to_status, detail) SELECT now(), 'device_image', device_id, image_id,"
            " deployment_set_id, 'in_transit', 'failed', failure_reason FROM device_images"
            " WHERE status = 'failed'"))
        conn.execute(text("UPDATE devices SET last_seen = now() WHERE id % 2 = 0"))
        conn.execute(text("ANALYZE"))


def pages(deployment: str, image: str) -> dict[str, str]:
    return {
        "overview": "/ui/",
        "overview_live": "/ui/live/overview",
        "deployments": "/ui/deployments",
        "deployments_filtered": "/ui/deployments?by=bench&state=pending",
        "deployment": f"/ui/deployments/{deployment}",
        "deployment_live_failed": f"/ui/live/deployments/{deployment}?status=failed",
        "deployment_page_100": f"/ui/deployments/{deployment}?page=100",
        "devices": "/ui/devices",
        "devices_search_name": "/ui/devices?q=dev-0042",
        "devices_search_label": "/ui/devices?q=site%3Ds7",
        "devices_sorted_last_seen": "/ui/devices?sort=last_seen&order=desc&page=50",
        "device": "/ui/devices/dev-000123",
        "images": "/ui/images",
        "image": f"/ui/images/{image}",
    }


def time_pages(client: TestClient, urls: dict[str, str], repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, url in urls.items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            answer = client.get(url)
            times.append((time.perf_counter() - t0) * 1000)
            if answer.status_code != 200:
                raise SystemExit(f"{url}: {answer.status_code} {answer.text[:300]}")
        out[name] = {"url": url, "median_ms": round(statistics.median(times), 1),
                     "max_ms": round(max(times), 1)}
    return out


def build(engine: Any, devices: int, work: Path, reuse: bool) -> tuple[dict[str, Any], str]:
    """The fleet and its deployment: built, or (REUSE) the newest deployment of a fleet
    this script built before at --pg-url; (the deployment's figures, its id)."""
    if reuse:
        with engine.begin() as conn:
            found = conn.execute(text("SELECT count(*) FROM devices")).scalar()
            if found != devices:
                raise SystemExit(f"--reuse: the database has {found} devices, not {devices}")
            set_id = conn.execute(text(
                "SELECT id FROM deployment_sets ORDER BY created_at DESC LIMIT 1")).scalar()
            conn.execute(text("ANALYZE"))
        return {"reused": True}, str(set_id)
    populate(engine, devices)
    figures, result, _ = plan_and_record(engine, devices, work)
    degrade(engine)
    return figures, result.deployment_id


def run(url: str, devices: int, repeat: int, work: Path, reuse: bool = False) -> dict[str, Any]:
    engine = init_db(url)
    t0 = time.perf_counter()
    figures, set_id = build(engine, devices, work, reuse)
    with engine.connect() as conn:
        counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                  for t in ("devices", "device_images", "events", "bundles")}
        image = conn.execute(text("SELECT name FROM images ORDER BY id DESC LIMIT 1")).scalar()
    setup_s = time.perf_counter() - t0
    operator = OperatorToken("bench", "sha256:" + "0" * 64)
    with session_scope(engine) as s:
        secret, _ = open_session(s, operator)
    engine.dispose()
    settings = HubServerSettings(fleet=Settings(data_dir=work / "hub", db_url=url),
                                 operators=(operator,))
    with TestClient(create_app(settings), follow_redirects=False) as client:
        client.cookies.set(COOKIE, secret, path="/ui")
        times = time_pages(client, pages(set_id, str(image)), repeat)
    worst = max(t["median_ms"] for t in times.values())
    return {"devices": devices, "load_average_1m": round(os.getloadavg()[0], 1),
            "rows": counts, "setup_seconds": round(setup_s, 1),
            "deployment": figures, "pages": times, "worst_median_ms": worst,
            "target_ms": TARGET_MS, "met": worst < TARGET_MS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true",
                    help="time the pages of the fleet already at --pg-url (built by a run before)")
    args = ap.parse_args(argv)
    if args.reuse and not args.pg_url:
        ap.error("--reuse needs --pg-url")
    with tempfile.TemporaryDirectory(prefix="dp-ui-bench-") as tmp, ExitStack() as stack:
        url = args.pg_url or stack.enter_context(postgres_server())
        out = run(url, args.devices, args.repeat, Path(tmp), args.reuse)
    text_out = json.dumps(out, indent=2)
    print(text_out)
    if args.json:
        args.json.write_text(text_out + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
