"""SIGKILL of an agent process mid-download and mid-reconstruction, then a restart.

The agent runs as ``deltaport agent run --config agent.toml`` in its own process. A
watcher thread polls the device registry all along, as a runtime would pull: whenever
the target tag resolves to a manifest, every blob it names must be there (no half image).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from deltaport.agent import AgentConfig
from tests.agent.conftest import DEVICE, World, agent_config, image_id_in
from tests.agent.hubdouble import HubDouble
from tests.fixtures.proxy import TcpProxy
from tests.fixtures.services import Registry

KiB = 1024
ACCEPT = ("application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json")


def write_toml(path: Path, config: AgentConfig) -> Path:
    assert config.hub is not None
    keys = ", ".join(f'"{k}"' for k in config.trusted_keys)
    path.write_text(
        f'device = "{config.device}"\ntrusted_keys = [{keys}]\ninbox = "{config.inbox}"\n'
        f'state_dir = "{config.state_dir}"\nregistry = "{config.registry}"\n'
        f"poll_interval = {config.poll_interval}\n"
        f'[hub]\nurl = "{config.hub.url}"\ntoken = "{config.hub.token}"\ntimeout = 5.0\n'
        f"insecure = {'true' if config.hub.insecure else 'false'}\n")
    return path


@contextmanager
def agent_process(toml: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``deltaport agent run`` in its own process; killed by PID if still running at the end."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deltaport.cli.main", "agent", "run", "--config", str(toml)],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(what: str, check: Callable[[], bool], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; agent log:\n{log.read_text()[-3000:]}")
        time.sleep(0.01)


class HalfImageWatcher:
    """Polls ``repo:tag`` in a registry; records any moment it is visible but incomplete."""

    def __init__(self, registry: Registry, name: str) -> None:
        self.base = registry.url
        self.repo, self.tag = name.rsplit(":", 1)
        self.problems: list[str] = []
        self.seen_complete = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> HalfImageWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as http:
            while not self._stop.wait(0.02):
                try:
                    self._check(http)
                except httpx.HTTPError:
                    continue

    def _check(self, http: httpx.Client) -> None:
        tags = http.get(f"/v2/{self.repo}/tags/list")
        if tags.status_code != 200 or self.tag not in (tags.json().get("tags") or []):
            return
        manifest = http.get(f"/v2/{self.repo}/manifests/{self.tag}", headers={"Accept": ACCEPT})
        if manifest.status_code == 404:
            return  # Distribution lists a tag a moment before its link is written: not there
        if manifest.status_code != 200:
            self.problems.append(f"tag listed, manifest {manifest.status_code}")
            return
        doc = manifest.json()
        for blob in [doc["config"], *doc["layers"]]:
            head = http.head(f"/v2/{self.repo}/blobs/{blob['digest']}")
            if head.status_code != 200:
                self.problems.append(f"blob {blob['digest']} answers {head.status_code}")
        self.seen_complete += 1


def _present(hub: HubDouble, image_id: str) -> Callable[[], bool]:
    return lambda: any(s["status"] == "present" for s in hub.statuses(image_id))


def _stop_cleanly(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]


def test_sigkill_mid_download_resumes_without_resending(
        tmp_path: Path, world: World, device_registry: Registry) -> None:
    big = world.big
    log = tmp_path / "agent.log"
    with HubDouble(tokens={"tok-1": DEVICE}) as hub, \
            TcpProxy(("127.0.0.1", hub.port), rate=300_000) as link, \
            HalfImageWatcher(device_registry, big.target) as watcher:
        hosted = hub.add_bundle(DEVICE, big.path, image_id=big.image_id, target=big.target,
                                deployment="dep-3")
        config = agent_config(tmp_path, world, device_registry.host, hub_url=link.url)
        toml = write_toml(tmp_path / "agent.toml", config)
        part = config.state_dir / "downloads" / hosted.digest.removeprefix("sha256:") / \
            "payload.part"
        with agent_process(toml, log) as proc:
            wait_for("half the payload", lambda: part.exists() and part.stat().st_size > 600_000,
                     60, log)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        on_disk = part.stat().st_size
        assert on_disk < big.size and image_id_in(device_registry, big.target) is None
        link.set_rate(3_000_000)
        with agent_process(toml, log) as proc:
            wait_for("the present status", _present(hub, big.image_id), 90, log)
            _stop_cleanly(proc, log)
        assert link.bytes_down <= big.size + 64 * KiB, (link.bytes_down, big.size)
    assert watcher.problems == [] and watcher.seen_complete > 0
    assert image_id_in(device_registry, big.target) == big.image_id
    assert len(hub.statuses(big.image_id)) == 1


def test_sigkill_mid_reconstruction_finishes_after_restart(
        tmp_path: Path, world: World, device_registry: Registry) -> None:
    big = world.big
    log = tmp_path / "agent.log"
    host, port = device_registry.host.split(":")
    # The device registry behind a slow link, so reading the sources takes seconds.
    with HubDouble(tokens={"tok-1": DEVICE}) as hub, \
            TcpProxy((host, int(port)), rate=20_000) as slow_registry, \
            HalfImageWatcher(device_registry, big.target) as watcher:
        hub.add_bundle(DEVICE, big.path, image_id=big.image_id, target=big.target,
                       deployment="dep-3")
        config = agent_config(tmp_path, world, f"127.0.0.1:{slow_registry.port}",
                              hub_url=hub.url)
        toml = write_toml(tmp_path / "agent.toml", config)
        scratch = config.state_dir / "scratch"
        with agent_process(toml, log) as proc:
            wait_for("a reconstruction to start",
                     lambda: any(p.name.startswith("deltaport-") for p in scratch.iterdir())
                     if scratch.is_dir() else False, 90, log)
            time.sleep(0.3)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert image_id_in(device_registry, big.target) is None  # it really was mid-way
        assert hub.statuses(big.image_id) == []
        slow_registry.set_rate(None)
        with agent_process(toml, log) as proc:
            wait_for("the present status", _present(hub, big.image_id), 90, log)
            _stop_cleanly(proc, log)
        bundle_gets = [r for r in hub.requests if "/bundles/sha256" in r[1]]
    assert len(bundle_gets) <= 3  # head + payload once: the restart used what was on disk
    assert watcher.problems == [] and watcher.seen_complete > 0
    assert image_id_in(device_registry, big.target) == big.image_id
    assert [s["status"] for s in hub.statuses(big.image_id)] == ["present"]
