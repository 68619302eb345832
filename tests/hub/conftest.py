"""Fixtures for the hub tests: a fleet with a deployment in flight, and a real hub serving it.

The fleet is built with the real fleet and pipeline code (register, add devices,
record inventories, deploy) on a real database; only the registry reader, signer
and bundle builder are fakes (``tests/fleet/fakes.py`` plus a builder writing
random bytes of a chosen size), because the hub serves bundle *files*: their
content is the delta engine's business, tested elsewhere. The hub runs on real
uvicorn, in a thread (:func:`hub_in_thread`) or as a ``deltaport hub serve``
subprocess (:class:`HubProcess`), against real SQLite or PostgreSQL.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from deltaport.bundle.keys import generate_keypair
from deltaport.config import Settings, SmtpSettings
from deltaport.demo.processes import stop_process
from deltaport.fleet import device_images, queries
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.documents import Inventory, InventoryEntry
from deltaport.fleet.queries import hash_token
from deltaport.hub.app import create_app
from deltaport.hub.settings import HubServerSettings, OperatorToken
from deltaport.hub.toolkit import Toolkit
from deltaport.notify.email import Notifier
from deltaport.pipelines import image_to_device as i2d
from deltaport.pipelines.interfaces import BuiltBundle, BundleSpec
from deltaport.pipelines.manifest import parse_manifest
from deltaport.storage.folder import FolderStore
from tests.fixtures.services import free_port
from tests.fleet.conftest import PostgresServer, postgres, smtp_server  # noqa: F401
from tests.fleet.fakes import CountingRanker, FakeRegistry, FakeSigner

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_TOKEN = "operator-secret-token-for-tests-0123456789"
REGISTRY = "cloud.example:5000"


@dataclass
class SizedBuilder:
    """BundleBuilder writing SIZE pseudo-random bytes per bundle (seeded by the bundle key)."""

    size: int = 300 * 1024
    built: list[str] = field(default_factory=list)
    signer: str | None = "sized-test-key"  # these bundles stand for signed ones

    def build(self, spec: BundleSpec, work_dir: Path) -> BuiltBundle:
        work_dir.mkdir(parents=True, exist_ok=True)
        data = random.Random(spec.key).randbytes(self.size)
        path = work_dir / f"{spec.key}.dpb"
        path.write_bytes(data)
        self.built.append(spec.key)
        return BuiltBundle(path, len(data), "sha256:" + hashlib.sha256(data).hexdigest())

    def prebuild(self, reference: str, work_dir: Path) -> int:
        self.built.append(f"prebuild {reference}")
        return 0


def fake_toolkit(registry: FakeRegistry, bundle_size: int = 300 * 1024) -> Toolkit:
    """A toolkit of fakes over REGISTRY."""
    return Toolkit(
        reader=registry,
        signer=FakeSigner(),
        ranker=CountingRanker(),
        builder=SizedBuilder(bundle_size),
    )


@dataclass
class World:
    """A fleet with one deployment of app:v2 in flight to dev-1 (has v1) and dev-2 (empty)."""

    data_dir: Path
    db_url: str
    registry: FakeRegistry
    tokens: dict[str, str]  # device → token
    deployment: str
    v1: str  # image IDs
    v2: str
    bundles: dict[str, str]  # device → digest of its bundle
    bundle_size: int

    @property
    def store(self) -> FolderStore:
        return FolderStore(self.data_dir / "outbox")

    @property
    def manifest_public_key(self) -> Path:
        return self.data_dir / "keys" / "manifest.pub"

    def bundle_path(self, device: str) -> Path:
        matches = [
            p
            for p in (self.data_dir / "outbox" / "bundles").iterdir()
            if "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() == self.bundles[device]
        ]
        assert len(matches) == 1
        return matches[0]

    def settings(self, *, port: int = 0, smtp: SmtpSettings | None = None) -> HubServerSettings:
        fleet = Settings(data_dir=self.data_dir, db_url=self.db_url, smtp=smtp)
        return HubServerSettings(
            fleet=fleet, port=port, operators=(OperatorToken("ops", hash_token(OPERATOR_TOKEN)),)
        )


def build_world(data_dir: Path, db_url: str, bundle_size: int = 300 * 1024) -> World:
    """Register v1/v2, add dev-1 (has v1) and dev-2, deploy v2 to both (two bundles)."""
    generate_keypair(data_dir / "keys", "manifest")  # the hub signs desired manifests
    registry = FakeRegistry()
    registry.add(f"{REGISTRY}/demo/app:v1", ["base", "lib1", "app1"])
    registry.add(f"{REGISTRY}/demo/app:v2", ["base", "lib1", "app2"])
    engine = init_db(db_url)
    try:
        tokens = {}
        with session_scope(engine) as s:
            for tag in ("v1", "v2"):
                i2d.register(
                    s,
                    reference=f"docker://{REGISTRY}/demo/app:{tag}",
                    name=None,
                    reader=registry,
                    signer=FakeSigner(),
                    signatures_dir=data_dir / "signatures",
                )
            for name in ("dev-1", "dev-2"):
                _, tokens[name] = queries.add_device(s, name=name, link_rate_bps=1_000_000)
            v1 = queries.find_image(s, f"{REGISTRY}/demo/app:v1").image_id
            v2 = queries.find_image(s, f"{REGISTRY}/demo/app:v2").image_id
            device_images.record_inventory(
                s,
                device=queries.get_device(s, "dev-1"),
                inventory=Inventory((InventoryEntry(v1, "demo/app:v1"),)),
            )
        compose = f"services:\n  app:\n    image: {REGISTRY}/demo/app:v2\n"
        manifest = parse_manifest(compose.encode())
        builder = SizedBuilder(bundle_size)
        result = i2d.deploy(
            engine,
            i2d.DeployRequest(manifest, "alice", "alice@example.com", ("dev-1", "dev-2")),
            ranker=CountingRanker(),
            builder=builder,
            store=FolderStore(data_dir / "outbox"),
            work_dir=data_dir / "work",
        )
        with session_scope(engine) as s:
            from deltaport.fleet.models import Bundle

            digests = {b.key: b.digest for b in s.query(Bundle)}
    finally:
        engine.dispose()
    per_device = {d.device: digests[d.bundles[0]] for d in result.devices}
    assert len(set(per_device.values())) == 2
    return World(
        data_dir, db_url, registry, tokens, result.deployment_id, v1, v2, per_device, bundle_size
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hub.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a SQLite file, or a new database on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.url(server.new_database())


@pytest.fixture
def world(tmp_path: Path, sqlite_url: str) -> World:
    """The fleet on SQLite."""
    return build_world(tmp_path / "data", sqlite_url)


@pytest.fixture
def any_world(tmp_path: Path, db_url: str) -> World:
    """The fleet on SQLite and on PostgreSQL."""
    return build_world(tmp_path / "data", db_url)


# --- a hub on real uvicorn ------------------------------------------------------


@dataclass
class LiveHub:
    """A running hub and clients for a device or the operator."""

    url: str
    world: World
    toolkit: Toolkit

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def device(self, name: str) -> httpx.Client:
        return self.client(self.world.tokens[name])

    def operator(self) -> httpx.Client:
        return self.client(OPERATOR_TOKEN)


@contextmanager
def hub_in_thread(
    settings: HubServerSettings,
    *,
    toolkit: Toolkit | None = None,
    notifier: Notifier | None = None,
) -> Iterator[str]:
    """Serve create_app(settings) with uvicorn in a thread on a free port; yield its URL."""
    port = settings.port or free_port()
    app = create_app(settings, toolkit=toolkit, notifier=notifier)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("hub did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def hub(world: World) -> Iterator[LiveHub]:
    """A hub on SQLite, in a thread, with the fake toolkit."""
    toolkit = fake_toolkit(world.registry)
    with hub_in_thread(world.settings(), toolkit=toolkit) as url:
        yield LiveHub(url, world, toolkit)


@pytest.fixture
def any_hub(any_world: World) -> Iterator[LiveHub]:
    """A hub on SQLite and on PostgreSQL, in a thread, with the fake toolkit."""
    toolkit = fake_toolkit(any_world.registry)
    with hub_in_thread(any_world.settings(), toolkit=toolkit) as url:
        yield LiveHub(url, any_world, toolkit)


# --- a hub as a separate process ------------------------------------------------


@dataclass
class HubProcess:
    """``deltaport hub serve`` as a subprocess; stopped (or killed) by its PID."""

    data_dir: Path
    db_url: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> HubProcess:
        args = [
            sys.executable,
            "-m",
            "deltaport.cli.main",
            "hub",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--db",
            self.db_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"hub did not answer: {self.log.read_text()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=15, sig=sig)


@pytest.fixture
def hub_process_factory(tmp_path: Path) -> Iterator[Any]:
    """Make HubProcess objects; every one still running at the end is stopped."""
    made: list[HubProcess] = []

    def make(world: World, port: int | None = None) -> HubProcess:
        hp = HubProcess(world.data_dir, world.db_url, port or free_port(), tmp_path / "hub.log")
        made.append(hp)
        return hp

    yield make
    for hp in made:
        hp.stop(signal.SIGKILL)
