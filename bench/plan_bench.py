"""Planning and status-ingestion benchmark for the fleet database, on SQLite and PostgreSQL.

    .venv/bin/python bench/plan_bench.py [--devices 100000] [--messages 20000]
                                         [--backends sqlite,postgresql] [--pg-url URL]

Simulates a fleet with realistic inventory mixes: 5 modules, each in one of 4
versions on a device (most devices one or two versions behind, a few already
current, a few without the module), plus a shared base image. A deployment of the 5
current images is planned (resolve images, load every device's inventory, rank
sources, group devices into shared bundles — no bundle is built), recorded (device
images marked in_transit), then status messages are ingested in batches as the hub
would, and messages/second measured. Targets: planning < 30 s for 100,000 devices;
ingestion >= 2,000 messages/s.

Without --pg-url a throwaway PostgreSQL 15 server is started (as in RECIPES.md) and
stopped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.documents import StatusMessage
from deltaport.fleet.models import Device, DeviceImage, Image, utcnow
from deltaport.pipelines import image_to_device as i2d
from deltaport.pipelines.adapters import LayerSourceRanker
from deltaport.pipelines.events import handle_status_messages
from deltaport.pipelines.interfaces import BuiltBundle
from deltaport.pipelines.manifest import parse_manifest
from deltaport.storage.folder import FolderStore

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MODULES = ("sensor", "gateway", "web", "ml", "logger")
VERSIONS = 4  # v1..v4; v4 is what the deployment ships
VERSION_MIX = (0.05, 0.20, 0.55, 0.12)  # share of devices on v1..v4; the rest lack the module
INSERT_CHUNK = 20_000


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def image_rows() -> list[dict[str, object]]:
    """The registered images: a base, and 4 versions of each module sharing lower layers."""
    rows = [_image("reg.io/base:1", ["os"])]
    for m in MODULES:
        for v in range(1, VERSIONS + 1):
            rows.append(_image(f"reg.io/{m}:{v}", ["os", f"{m}-deps", f"{m}-code-{v}"]))
    return rows


def _image(name: str, layers: list[str]) -> dict[str, object]:
    return {
        "name": name,
        "image_id": digest("config:" + name),
        "manifest_digest": digest("manifest:" + name),
        "diff_ids": [digest("layer:" + la) for la in layers],
        "layer_sizes": [5_000_000 for _ in layers],
        "registered_at": utcnow(),
    }


def populate(engine: Engine, devices: int, seed: int = 7) -> None:
    """Register images, add DEVICES devices and their present images (bulk inserts)."""
    rng = random.Random(seed)
    images = image_rows()
    ids = {str(r["name"]): str(r["image_id"]) for r in images}
    now = utcnow()
    with session_scope(engine) as s:
        s.execute(insert(Image), images)
        for start in range(0, devices, INSERT_CHUNK):
            n = min(INSERT_CHUNK, devices - start)
            s.execute(
                insert(Device),
                [
                    {
                        "name": f"dev-{i:06d}",
                        "token_hash": "sha256:x",
                        "link_rate_bps": rng.choice((256_000, 1_000_000, 4_000_000)),
                        "labels": {"site": f"s{i % 50}"},
                        "local_registry": "localhost:5000",
                        "created_at": now,
                    }
                    for i in range(start, start + n)
                ],
            )
    with session_scope(engine) as s:
        rows = []
        for dev_id in range(1, devices + 1):
            rows.append(_row(dev_id, ids["reg.io/base:1"], now))
            for m in MODULES:
                v = _pick_version(rng)
                if v is not None:
                    rows.append(_row(dev_id, ids[f"reg.io/{m}:{v}"], now))
            if len(rows) >= INSERT_CHUNK:
                s.execute(insert(DeviceImage), rows)
                rows = []
        if rows:
            s.execute(insert(DeviceImage), rows)


def _pick_version(rng: random.Random) -> int | None:
    x, acc = rng.random(), 0.0
    for v, share in enumerate(VERSION_MIX, start=1):
        acc += share
        if x < acc:
            return v
    return None


def _row(device_id: int, image_id: str, now: object) -> dict[str, object]:
    return {
        "device_id": device_id,
        "image_id": image_id,
        "status": "present",
        "created_at": now,
        "updated_at": now,
    }


def compose_manifest() -> bytes:
    services = {m: {"image": f"reg.io/{m}:{VERSIONS}"} for m in MODULES}
    return json.dumps({"services": services}).encode()


class NoBuild:
    """Planning benchmark: the plan is recorded with placeholder bundles, nothing built."""

    def build(self, spec: object, work_dir: Path) -> BuiltBundle:
        raise AssertionError("the planning benchmark builds nothing")


def measure(url: str, devices: int, messages: int, batch: int, work: Path) -> dict[str, float]:
    """Populate, plan, record and ingest on the database at URL; return the figures."""
    engine = init_db(url)
    t0 = time.perf_counter()
    populate(engine, devices)
    t_populate = time.perf_counter() - t0
    request = i2d.DeployRequest(
        manifest=parse_manifest(compose_manifest()),
        requested_by="bench",
        contact_email="bench@example.com",
        labels={},
        device_names=tuple(f"dev-{i:06d}" for i in range(devices)),
    )
    store = FolderStore(work / "outbox")
    t0 = time.perf_counter()
    with session_scope(engine) as s:
        data = i2d.load_planning_input(s, request)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = i2d.make_plan(data, LayerSourceRanker(), store)
    t_plan = time.perf_counter() - t0
    built = {
        b.key: (BuiltBundle(work / "none", 1_000_000, digest(b.key)), f"file:///{b.key}")
        for b in plan.to_build
    }
    t0 = time.perf_counter()
    with session_scope(engine) as s:
        result = i2d.record_deployment(s, request, data, plan, built, _NullStore())
    t_record = time.perf_counter() - t0
    sent = [(r.device, name) for r in result.devices for name in r.sending]
    ids = {img.name: img.image_id for img in data.images}
    msgs = [
        StatusMessage(f"m{i}", dev, ids[name], "present", deployment=result.deployment_id)
        for i, (dev, name) in enumerate(sent[:messages])
    ]
    t0 = time.perf_counter()
    for start in range(0, len(msgs), batch):
        out = handle_status_messages(engine, msgs[start : start + batch])
        assert all(r.outcome == "applied" for r in out.results), out.results[:3]
    t_ingest = time.perf_counter() - t0
    engine.dispose()
    return {
        "devices": devices,
        "bundles": len(plan.bundles),
        "populate_s": t_populate,
        "load_s": t_load,
        "plan_s": t_plan,
        "planning_s": t_load + t_plan,
        "record_s": t_record,
        "messages": len(msgs),
        "ingest_per_s": len(msgs) / t_ingest if t_ingest else 0.0,
    }


class _NullStore:
    """Orders are not written in the benchmark (100,000 small files measure the disk)."""

    def put_bytes(self, key: str, data: bytes) -> str:
        return key

    def put_file(self, key: str, path: Path) -> str:
        return key

    def exists(self, key: str) -> bool:
        return False

    def location(self, key: str) -> str:
        return key

    def open(self, key: str) -> object:
        raise FileNotFoundError(key)

    def delete(self, key: str) -> None:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL 15 (initdb as user postgres), stopped by pg_ctl at the end."""
    root = Path(tempfile.mkdtemp(prefix="dp-bench-pg-"))
    shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()

    def as_pg(cmd: str) -> None:
        subprocess.run(["su", "postgres", "-c", cmd], check=True, capture_output=True)

    as_pg(f"{PG_BIN}/initdb -D {data} -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    as_pg(f"{PG_BIN}/pg_ctl -D {data} -l {root}/log -w -o '{opts}' start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        as_pg(f"{PG_BIN}/pg_ctl -D {data} -m fast -w stop")
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1000, help="messages per ingestion transaction")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="dp-bench-") as tmp:
        work = Path(tmp)
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite:///{work / 'bench.db'}"
                results[backend] = measure(url, args.devices, args.messages, args.batch, work)
                _print({backend: results[backend]})
            elif args.pg_url:
                results[backend] = measure(
                    args.pg_url, args.devices, args.messages, args.batch, work
                )
            else:
                with postgres_server() as url:
                    results[backend] = measure(url, args.devices, args.messages, args.batch, work)
    _print(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    ok = all(r["planning_s"] < 30 and r["ingest_per_s"] >= 2000 for r in results.values())
    return 0 if ok else 1


def _print(results: dict[str, dict[str, float]]) -> None:
    table = Table(title="fleet planning and status ingestion")
    cols = [
        "backend",
        "devices",
        "bundles",
        "load s",
        "plan s",
        "planning s (<30)",
        "record s",
        "messages",
        "ingest msg/s (>=2000)",
    ]
    for c in cols:
        table.add_column(c)
    for name, r in results.items():
        table.add_row(
            name,
            f"{r['devices']:.0f}",
            f"{r['bundles']:.0f}",
            f"{r['load_s']:.2f}",
            f"{r['plan_s']:.2f}",
            f"{r['planning_s']:.2f}",
            f"{r['record_s']:.2f}",
            f"{r['messages']:.0f}",
            f"{r['ingest_per_s']:.0f}",
        )
    Console(width=150).print(table)


if __name__ == "__main__":
    sys.exit(main())
