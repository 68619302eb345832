"""Three ``deltaport hub serve`` processes on one real PostgreSQL behind a real nginx.

The fleet is the hub tests' world (tests/hub/conftest.py: app:v1 and app:v2, dev-1 and
dev-2, one deployment in flight) on a fresh PostgreSQL database. Every hub serves the
same data dir (its outbox folder is the bundle store; several machines would share an
S3-compatible store instead, docs/scale-out.md). Hubs and nginx run on free loopback
ports and are stopped by PID, killed ones included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from deltaport.demo.processes import stop_process
from deltaport.transfer.config import MiB
from tests.fixtures.services import free_port
from tests.fleet.conftest import PostgresServer, postgres  # noqa: F401
from tests.hub.conftest import OPERATOR_TOKEN, World, build_world
from tests.scale.nginx import HUB_HEADER, Nginx, run_nginx

ROOT = Path(__file__).resolve().parents[2]
HUBS = 3
START_TIMEOUT_S = 45.0  # three interpreters importing the hub at once on a loaded 2-core box
BUNDLE_SIZE = 16 * MiB


@dataclass
class Hub:
    """One ``deltaport hub serve`` child, on its own port and log."""

    index: int
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def spawn(self, world: World) -> None:
        args = [sys.executable, "-m", "deltaport.cli.main", "hub", "serve",
                "--data-dir", str(world.data_dir), "--db", world.db_url,
                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, cwd=ROOT)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub {self.index} exited: {self.log.read_text()}")
            try:
                if httpx.get(f"http://{self.address}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"hub {self.index} did not answer: {self.log.read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the hub dies mid-whatever, as a crashed machine would."""
        if self.proc is not None:
            stop_process(self.proc, timeout=10, sig=signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=10)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class HubFleet:
    """The world, its hubs, and nginx in front of them."""

    world: World
    hubs: list[Hub]
    nginx: Nginx
    pg: PostgresServer
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nginx.url

    def client(self, token: str) -> httpx.Client:
        c = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                         timeout=30)
        self.clients.append(c)
        return c

    def device(self, name: str) -> httpx.Client:
        return self.client(self.world.tokens[name])

    def operator(self) -> httpx.Client:
        return self.client(OPERATOR_TOKEN)

    def hub_at(self, address: str) -> Hub:
        """The hub nginx named in its X-Deltaport-Hub header."""
        return next(h for h in self.hubs if h.address == address)


def answered_by(response: httpx.Response) -> str:
    """The hub (``host:port``) that answered RESPONSE through nginx (the last one tried)."""
    return response.headers[HUB_HEADER].split(",")[-1].strip()


@pytest.fixture(scope="module")
def hub_fleet(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer  # noqa: F811
) -> Iterator[HubFleet]:
    """Three hubs on one new PostgreSQL database behind nginx, shared by a module's tests
    (starting three hubs costs most of the time); all stopped by PID at the end. A test
    that kills a hub comes last in its module."""
    tmp_path = tmp_path_factory.mktemp("hubs")
    world = build_world(tmp_path / "data", postgres.url(postgres.new_database()),
                        bundle_size=BUNDLE_SIZE)
    hubs = [Hub(i, free_port(), tmp_path / f"hub{i}.log") for i in range(HUBS)]
    try:
        for hub in hubs:
            hub.spawn(world)
        with ThreadPoolExecutor(HUBS) as pool:
            list(pool.map(lambda h: h.wait_ready(), hubs))
        with run_nginx(tmp_path / "nginx", [h.address for h in hubs], free_port()) as nginx:
            fleet = HubFleet(world, hubs, nginx, postgres)
            try:
                yield fleet
            finally:
                for c in fleet.clients:
                    c.close()
    finally:
        for hub in hubs:
            hub.kill()
