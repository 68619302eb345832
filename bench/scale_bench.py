"""Scale benchmark (issue 15): a 100,000-device fleet on PostgreSQL, several hubs behind nginx.

    nice -n 10 .venv/bin/python bench/scale_bench.py --hubs 3 --devices 100000 \\
        --json bench/scale_results.json [--pg-url URL] [--seconds 60] [--messages N]

Measures, on a throwaway PostgreSQL 15 (or --pg-url):

- ``plan_and_record_seconds``: load the fleet's inventory, plan and record a 5-image
  deployment (device images in_transit through COPY, one event each; target < 30 s).
  The fleet is the one of ``bench/plan_bench.py`` (5 modules in 4 versions, a shared base).
- ``checkin_p99_ms``: ``--hubs`` ``deltaport hub serve`` processes behind a real nginx
  (tests/scale/nginx.py, the configuration docs/scale-out.md shows); 100,000 devices
  checking in every 10 minutes is ~167 check-ins a second, sent on that schedule (open
  loop, latency from the scheduled start) for ``--seconds``, each with the device's own
  token and inventory (target < 100 ms).
- ``status_messages_per_second``: the devices report their deployed images ``present``
  through nginx, one request per device with its messages (a device may only report for
  itself), over ``--concurrency`` connections back to back for ``--seconds`` (target
  >= 10,000). Each report marks the device arrived in the deployment set once it has
  every image; the set (all the devices) completes with the last one.
- ``*_load_average``: the 1-minute load average before and after each measurement (the
  machine is shared: the figures move with it).
- With ``--messages N``, also ``status_ingest_per_second_in_process``: N messages through
  ``handle_status_messages`` in this process in batches of ``--batch`` (no HTTP).

Everything listens on 127.0.0.1; every loop is bounded by a count and by --seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import text
from sqlalchemy.engine import Engine
from tests.scale.nginx import run_nginx

from bench.plan_bench import _NullStore, compose_manifest, digest, populate, postgres_server
from bench.scale_load import Call, Outcome, closed_loop, open_loop
from deltaport.bundle.keys import generate_keypair
from deltaport.demo.processes import stop_process
from deltaport.demo.services import free_port
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.documents import StatusMessage
from deltaport.pipelines import image_to_device as i2d
from deltaport.pipelines.adapters import LayerSourceRanker
from deltaport.pipelines.events import handle_status_messages
from deltaport.pipelines.interfaces import BuiltBundle
from deltaport.pipelines.manifest import parse_manifest
from deltaport.storage.folder import FolderStore

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"plan_and_record_seconds": 30.0, "checkin_p99_ms": 100.0}
MESSAGES_TARGET = 10_000
CHECKIN_INTERVAL_S = 600  # each device checks in every 10 minutes
HUB_START_TIMEOUT_S = 90.0
API = "/api/v1/device"
NOT_MEASURED: dict[str, str] = {}  # key -> why it is not measured (reported as null)


def token(device: str) -> str:
    return f"bench-token-{device}"


def plan_and_record(engine: Engine, devices: int, work: Path) -> tuple[dict[str, Any], Any, Any]:
    """Time loading, planning and recording the deployment; the figures, result and input."""
    request = i2d.DeployRequest(
        manifest=parse_manifest(compose_manifest()),
        requested_by="bench",
        contact_email="bench@example.com",
        labels={},
        device_names=tuple(f"dev-{i:06d}" for i in range(devices)),
    )
    t0 = time.perf_counter()
    with session_scope(engine) as s:
        data = i2d.load_planning_input(s, request)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    plan = i2d.make_plan(data, LayerSourceRanker(), FolderStore(work / "plan-outbox"))
    plan_s = time.perf_counter() - t1
    built = {  # nothing is built: placeholder bundles stand for the built ones
        b.key: (BuiltBundle(work / "none", 1_000_000, digest(b.key)), f"file:///{b.key}")
        for b in plan.to_build
    }
    t2 = time.perf_counter()
    with session_scope(engine) as s:
        result = i2d.record_deployment(s, request, data, plan, built, _NullStore())
    record_s = time.perf_counter() - t2
    figures = {
        "bundles": len(plan.bundles),
        "device_images_sent": sum(len(r.sending) for r in result.devices),
        "load_seconds": round(load_s, 2),
        "plan_seconds": round(plan_s, 2),
        "record_seconds": round(record_s, 2),
        "plan_and_record_seconds": round(time.perf_counter() - t0, 2),
    }
    return figures, result, data


def give_tokens(engine: Engine) -> None:
    """Every device's token is ``bench-token-NAME`` (stored hashed, as hash_token does)."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE devices SET token_hash = 'sha256:' || "
                          "encode(sha256(convert_to('bench-token-' || name, 'UTF8')), 'hex')"))


def checkin_calls(engine: Engine, count: int, offset: int) -> list[Call]:
    """COUNT check-ins of distinct devices (from OFFSET on), each with its present images."""
    held: dict[str, list[str]] = defaultdict(list)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT d.name, di.image_id FROM devices d JOIN device_images di "
            "ON di.device_id = d.id WHERE di.status = 'present' AND d.id > :lo AND d.id <= :hi"
        ), {"lo": offset, "hi": offset + count})
        for name, image_id in rows:
            held[name].append(image_id)
    return [
        Call("POST", API + "/checkin", token(name), json.dumps(
            {"inventory": {"images": [{"image_id": i} for i in images]}}).encode())
        for name, images in held.items()
    ]


def status_calls(result: Any, data: Any) -> list[Call]:
    """One status request per device: its deployed images, present."""
    ids = {img.name: img.image_id for img in data.images}
    calls = []
    for r in result.devices:
        messages = [
            {"message_id": f"bench:{r.device}:{n}", "device": r.device, "image_id": ids[name],
             "status": "present", "deployment": result.deployment_id}
            for n, name in enumerate(r.sending)
        ]
        if messages:
            calls.append(Call("POST", API + "/status", token(r.device),
                              json.dumps({"messages": messages}).encode()))
    return calls


@contextmanager
def hubs_behind_nginx(work: Path, db_url: str, hubs: int) -> Iterator[str]:
    """HUBS ``deltaport hub serve`` processes on DB_URL behind nginx; yields nginx's URL."""
    data_dir = work / "hub"
    generate_keypair(data_dir / "keys", "manifest")  # activation signs desired manifests
    ports = [free_port() for _ in range(hubs)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}  # this tree's code
    procs: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        stack.callback(lambda: [stop_process(p, timeout=10) for p in procs])
        for i, port in enumerate(ports):
            log = stack.enter_context((work / f"hub{i}.log").open("ab"))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "deltaport.cli.main", "hub", "serve", "--data-dir",
                 str(data_dir), "--db", db_url, "--host", "127.0.0.1", "--port", str(port),
                 "--log-level", "warning"], stdout=log, stderr=log, env=env, cwd=ROOT))
        for i, port in enumerate(ports):
            wait_healthy(f"http://127.0.0.1:{port}", procs[i], work / f"hub{i}.log")
        nginx = stack.enter_context(
            run_nginx(work / "nginx", [f"127.0.0.1:{p}" for p in ports], free_port()))
        yield nginx.url


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + HUB_START_TIMEOUT_S
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"hub at {url} did not start: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)


def described(out: Outcome) -> dict[str, Any]:
    return {"requests_ok": out.ok, "statuses": {str(k): v for k, v in out.statuses.items()},
            "errors": out.errors, "unanswered": out.unanswered,
            "seconds": round(out.seconds, 2),
            "p50_ms": out.percentile_ms(50), "p99_ms": out.percentile_ms(99),
            "max_ms": out.percentile_ms(100)}


def measure_checkins(url: str, engine: Engine, devices: int, seconds: float) -> dict[str, Any]:
    rate = devices / CHECKIN_INTERVAL_S
    calls = checkin_calls(engine, min(devices, int(rate * seconds) + 1), 0)
    out = open_loop(url, calls, rate=rate, limit_s=seconds)
    return {"checkin_p99_ms": out.percentile_ms(99), "checkin_rate_per_second": round(rate, 1),
            "checkin": described(out)}


def measure_status(url: str, calls: list[Call], seconds: float,
                   concurrency: int) -> dict[str, Any]:
    out = closed_loop(url, calls, concurrency=concurrency, limit_s=seconds)
    per_call = sum(c.body.count(b'"message_id"') for c in calls) / max(1, len(calls))
    seconds_taken = max(out.seconds, 1e-9)
    return {"status_messages_per_second": round(out.ok * per_call / seconds_taken),
            "status_messages_per_request": round(per_call, 2),
            "status_requests_per_second": round(out.ok / seconds_taken, 1),
            "status": described(out)}


def in_process_ingest(engine: Engine, result: Any, data: Any, messages: int,
                      batch: int) -> dict[str, Any]:
    ids = {img.name: img.image_id for img in data.images}
    sent = [(r.device, name) for r in result.devices for name in r.sending]
    msgs = [StatusMessage(f"m{i}", dev, ids[name], "present", deployment=result.deployment_id)
            for i, (dev, name) in enumerate(sent[-messages:])]
    t0 = time.perf_counter()
    for start in range(0, len(msgs), batch):
        handle_status_messages(engine, msgs[start : start + batch])
    took = time.perf_counter() - t0
    return {"status_ingest_per_second_in_process": round(len(msgs) / took) if took else None}


def measure(url: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    engine = init_db(url)
    t0 = time.perf_counter()
    populate(engine, args.devices)
    out: dict[str, Any] = {"devices": args.devices, "hubs": args.hubs,
                           "populate_seconds": round(time.perf_counter() - t0, 2)}
    with load_noted(out, "plan_and_record"):
        figures, result, data = plan_and_record(engine, args.devices, work)
    out |= figures
    give_tokens(engine)  # looked up by the index of migration 0012
    calls = status_calls(result, data)
    if args.messages:  # the tail of the fleet, kept apart from the devices reporting by HTTP
        out |= in_process_ingest(engine, result, data, args.messages, args.batch)
        calls = calls[: -args.messages]
    with hubs_behind_nginx(work, url, args.hubs) as proxy:
        with load_noted(out, "checkin"):
            out |= measure_checkins(proxy, engine, args.devices, args.seconds)
        with load_noted(out, "status"):
            out |= measure_status(proxy, calls, args.seconds, args.concurrency)
    out |= builds_speedup(url, work / "queue")
    for key, why in NOT_MEASURED.items():
        out[key], out[f"{key}_reason"] = None, why
    engine.dispose()
    return out


@contextmanager
def load_noted(out: dict[str, Any], name: str) -> Iterator[None]:
    """OUT[NAME_load_average] = the 1-minute load average before and after the block."""
    before = os.getloadavg()[0]
    yield
    out[f"{name}_load_average"] = [round(before, 1), round(os.getloadavg()[0], 1)]


def builds_speedup(url: str, work: Path) -> dict[str, Any]:
    """``builds_parallel_speedup``: 2 `deltaport worker` processes vs 1 on the same distinct
    layer patches, through the task queue on this PostgreSQL (bench/queue_bench.py)."""
    from bench.queue_bench import measure as measure_builds

    work.mkdir(parents=True, exist_ok=True)
    return measure_builds(url, work)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--hubs", type=int, default=3, help="hub processes behind nginx")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each HTTP measurement")
    ap.add_argument("--concurrency", type=int, default=24, help="connections reporting status")
    ap.add_argument("--messages", type=int, default=0, help="also ingest N in this process")
    ap.add_argument("--batch", type=int, default=1000, help="messages per in-process batch")
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    args.seconds = min(args.seconds, 120.0)  # each measurement stays under two minutes
    with tempfile.TemporaryDirectory(prefix="dp-scale-") as tmp:
        if args.pg_url:
            out = measure(args.pg_url, args, Path(tmp))
        else:
            with postgres_server() as url:
                out = measure(url, args, Path(tmp))
    out["targets"] = TARGETS | {"status_messages_per_second": MESSAGES_TARGET}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    met = all(out.get(k) is not None and out[k] < v for k, v in TARGETS.items())
    return 0 if met and (out.get("status_messages_per_second") or 0) >= MESSAGES_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
