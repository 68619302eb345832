"""Patch builds through the task queue (issue 15): ``builds_parallel_speedup``.

    nice -n 10 .venv/bin/python bench/queue_bench.py [--patches 8] [--layer-mib 4] \\
        [--pg-url URL] [--json bench/queue_results.json]

The same ``--patches`` distinct layer patches (self-contained ones, each a
``--layer-mib`` MiB layer of text-like data: zstd at the engine's level, CPU-bound)
are built by 1 `deltaport worker` process, then by 2, each run in its own data dir
(its own patch caches and store, so nothing is found built), on one PostgreSQL and one
registry. Timed from the first enqueue to the last job succeeded, workers started and
registered beforehand. ``builds_parallel_speedup`` = time with 1 / time with 2 (2.0 is
perfect; this machine's other load shows in it: ``cpu_count`` is printed).
``bench/scale_bench.py`` merges these keys into its figures (:func:`measure`).
Everything listens on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from tests.fixtures.images import Entry, build_image, write_oci_layout

from deltaport.delta.model import DeltaConfig
from deltaport.delta.patchcache import patch_key
from deltaport.demo.services import run_registry
from deltaport.jobs.app import conninfo, ensure_schema, make_app
from deltaport.jobs.identity import PatchJob
from deltaport.jobs.queue import defer_build
from deltaport.oci import TransportOptions, copy_image, open_source

DELTAPORT = Path(sys.executable).parent / "deltaport"
RUN_TIMEOUT_S = 600.0
WORDS = [f"w{n:x}" for n in range(4096)]


def text_layer(seed: int, size: int) -> bytes:
    """SIZE bytes of word soup (compresses like text: real work for zstd)."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += " ".join(rng.choices(WORDS, k=8192)).encode() + b"\n"
    return bytes(out[:size])


def push_images(registry_host: str, work: Path, patches: int, layer_bytes: int) -> list[PatchJob]:
    """PATCHES one-layer images in the registry; the self-contained patch job of each."""
    jobs = []
    for n in range(patches):
        image = build_image(layers=[[Entry("data", "dir"),
                                     Entry(f"data/blob-{n}.txt", data=text_layer(n, layer_bytes))]])
        layout = write_oci_layout(work / f"layout-{n}", image, tag="v")
        ref = f"docker://{registry_host}/bench/p{n}:v"
        copy_image(f"oci:{layout}:v", ref, TransportOptions(insecure=True))
        with open_source(ref, TransportOptions(insecure=True)) as src:
            diff_id = src.layers()[0].diff_id
        jobs.append(PatchJob(patch_key(diff_id, [], DeltaConfig()), ref, diff_id, ()))
    return jobs


def _count(db_url: str, sql: str) -> int:
    with psycopg.connect(conninfo(db_url)) as conn:
        row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row else 0


@contextmanager
def workers(home: Path, n: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    try:
        for i in range(n):
            log = open(home / f"worker-{i}.log", "wb")  # noqa: SIM115 - closed below
            procs.append(subprocess.Popen(
                [str(DELTAPORT), "--data-dir", str(home), "worker", "--insecure",
                 "--name", f"{home.name}-{i}"], stdout=log, stderr=subprocess.STDOUT))
            log.close()
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


def timed_run(db_url: str, home: Path, jobs: list[PatchJob], n_workers: int) -> float:
    """Seconds for N_WORKERS fresh worker processes to build JOBS."""
    home.mkdir(parents=True)
    (home / "config.toml").write_text(f'db = "{db_url}"\n')
    before = _count(db_url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
    with workers(home, n_workers):
        deadline = time.monotonic() + 120
        while _count(db_url, "SELECT count(*) FROM procrastinate_workers") < n_workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start: see {home}/worker-*.log")
            time.sleep(0.1)
        app = make_app(db_url)
        t0 = time.perf_counter()
        with app.open():
            for job in jobs:
                defer_build(app, job)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while _count(db_url, "SELECT count(*) FROM procrastinate_jobs "
                     "WHERE status = 'succeeded'") - before < len(jobs):
            if _count(db_url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'failed'"):
                raise RuntimeError(f"a build failed: see {home}/worker-*.log")
            if time.monotonic() > deadline:
                raise RuntimeError("builds did not finish in time")
            time.sleep(0.05)
        return time.perf_counter() - t0


def measure(db_url: str, work: Path, patches: int = 8, layer_mib: float = 4.0) -> dict[str, Any]:
    """``builds_parallel_speedup`` and its two times, on DB_URL (PostgreSQL)."""
    ensure_schema(db_url)
    with ExitStack() as stack:
        registry = stack.enter_context(run_registry(work / "registry"))
        jobs = push_images(registry.host, work, patches, int(layer_mib * (1 << 20)))
        load_before = os.getloadavg()[0]
        one = timed_run(db_url, work / "one-worker", jobs, 1)
        two = timed_run(db_url, work / "two-workers", jobs, 2)
        load_after = os.getloadavg()[0]
    return {
        "builds_parallel_speedup": round(one / two, 2),
        "builds_seconds_1_worker": round(one, 2),
        "builds_seconds_2_workers": round(two, 2),
        "builds_patches": patches,
        "builds_layer_mib": layer_mib,
        "builds_cpu_count": os.cpu_count(),
        "builds_load_average": [round(load_before, 1), round(load_after, 1)],  # other work
    }


def main(argv: list[str] | None = None) -> int:
    from bench.plan_bench import postgres_server

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--patches", type=int, default=8)
    ap.add_argument("--layer-mib", type=float, default=4.0)
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dp-queue-") as tmp, ExitStack() as stack:
        url = args.pg_url or stack.enter_context(postgres_server())
        out = measure(url, Path(tmp), args.patches, args.layer_mib)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
