"""Fixtures for the task-queue tests: real PostgreSQL, a real registry behind a throttling
proxy, registered images, and `deltaport worker` processes started and stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from deltaport.bundle.keys import generate_keypair
from deltaport.config import Settings, load_settings
from deltaport.demo.link import TcpProxy
from deltaport.fleet import device_images, queries
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.documents import Inventory, InventoryEntry
from deltaport.jobs.app import ensure_schema, make_app
from deltaport.jobs.queue import enqueue_deploy, queued
from deltaport.oci import TransportOptions, copy_image
from deltaport.pipelines import image_to_device as i2d
from deltaport.pipelines.adapters import (
    DeltaBundleBuilder,
    DeltaSignatureMaker,
    OciIdentityReader,
    SignatureRanker,
)
from deltaport.pipelines.manifest import parse_manifest
from deltaport.storage.folder import FolderStore
from deltaport.trust.files import load_signer
from tests.fixtures.images import build_image, write_oci_layout
from tests.fixtures.services import Registry
from tests.fleet.conftest import PostgresServer, postgres  # noqa: F401 - fixture

DELTAPORT = Path(sys.executable).parent / "deltaport"
WAIT_SECONDS = 120.0  # a bound for a loaded machine; a few seconds when idle


@dataclass
class Worker:
    """A `deltaport worker` process and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def built(self) -> list[str]:
        """Patch keys this worker really built (its "built patch KEY" log lines)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [ln.split("built patch ", 1)[1].split()[0] for ln in lines if "built patch " in ln]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@dataclass
class JobsFleet:
    """Two images (app:1, app:2) in a registry reached through PROXY; devices a (has
    app:1) and b, c (empty); a hub data dir on PostgreSQL with builds = workers."""

    home: Path
    db_url: str
    engine: Engine
    proxy: TcpProxy
    host: str  # the proxy's host:port: the registered image names use it
    ids: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return load_settings(self.home, env={})

    @property
    def store(self) -> FolderStore:
        return FolderStore(self.settings.store_dir)

    def builder(self) -> DeltaBundleBuilder:
        key = load_signer(self.settings.keys_dir / "deltaport.key")
        return DeltaBundleBuilder(TransportOptions(insecure=True), key,
                                  self.settings.patch_cache_dir)

    def request(self, devices: tuple[str, ...], image: str = "app:2") -> i2d.DeployRequest:
        manifest = parse_manifest(f"services:\n  app:\n    image: {self.host}/{image}\n".encode())
        return i2d.DeployRequest(manifest, "ci", "ops@example.com", devices)

    def enqueue(self, devices: tuple[str, ...]) -> str:
        app = make_app(self.db_url)
        result = enqueue_deploy(self.engine, app, self.request(devices), ranker=SignatureRanker(),
                                builder=self.builder(), store=self.store)
        assert result.state == "building"
        return result.deployment_id

    def start_worker(self, name: str, stalled_after: float = 2.0) -> Worker:
        log = self.home / f"worker-{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(DELTAPORT), "--data-dir", str(self.home), "worker", "--insecure",
                 "--name", name, "--heartbeat", "0.5", "--stalled-after", str(stalled_after)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        worker = Worker(name, proc, log)
        self.workers.append(worker)
        return worker

    def wait_state(self, set_id: str, state: str = "recorded",
                   timeout: float = WAIT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = queued(self.engine, set_id)
            if row is not None and row.state == state:
                return
            assert row is None or row.state == "building", (row.state, row.error)
            time.sleep(0.2)
        logs = "\n".join(w.log.read_text(errors="replace")[-3000:] for w in self.workers)
        raise AssertionError(f"{set_id} not {state} after {timeout} s\n{logs}")


def wait_for(check: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def jobs_fleet(postgres: PostgresServer, module_registry: Registry,  # noqa: F811
               tmp_path: Path) -> Iterator[JobsFleet]:
    db_url = postgres.url(postgres.new_database())
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(f'db = "{db_url}"\nbuilds = "workers"\n')
    generate_keypair(home / "keys")
    opts = TransportOptions(insecure=True)
    upstream_host, upstream_port = module_registry.host.split(":")
    proxy = TcpProxy((upstream_host, int(upstream_port))).start()
    host = f"127.0.0.1:{proxy.port}"
    engine = init_db(db_url)
    ensure_schema(db_url)
    ids = {}
    with session_scope(engine) as s:
        for tag, variant in (("1", 0), ("2", 1)):
            layout = write_oci_layout(tmp_path / f"layout{tag}", build_image(variant), tag="v")
            copy_image(f"oci:{layout}:v", f"docker://{host}/app:{tag}", opts)
            img = i2d.register(s, reference=f"docker://{host}/app:{tag}", name=None,
                               reader=OciIdentityReader(opts), signer=DeltaSignatureMaker(opts),
                               signatures_dir=home / "signatures")
            ids[tag] = img.image_id
        for dev in ("a", "b", "c", "d"):
            queries.add_device(s, name=dev, link_rate_bps=1_000_000)
        for dev in ("a", "d"):
            device_images.record_inventory(s, device=queries.get_device(s, dev),
                                     inventory=Inventory((InventoryEntry(ids["1"]),)))
    fleet = JobsFleet(home, db_url, engine, proxy, host, ids)
    try:
        yield fleet
    finally:
        for w in fleet.workers:
            w.stop()
        proxy.stop()
        engine.dispose()
