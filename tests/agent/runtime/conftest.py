"""Fixtures of the device runtime tests: a device registry run as a device runs it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deltaport.agent.runtime.registrygc import registrygc_command, running, stop_pid
from deltaport.demo.services import REGISTRY_CONFIG, Registry, free_port


@dataclass(frozen=True)
class DeviceRegistry:
    """A registry run from a PID file, as a device runs it (registrygc restarts it)."""

    registry: Registry
    pid_file: Path
    log: Path

    @property
    def gc_command(self) -> tuple[str, ...]:
        return registrygc_command("--config", str(self.registry.config), "--pid-file",
                                  str(self.pid_file), "--log", str(self.log))

    def pid(self) -> int:
        return int(self.pid_file.read_text())


def _wait_answering(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[DeviceRegistry]:
    work = tmp_path / "device-registry"
    work.mkdir()
    port = free_port()
    cfg = work / "config.yml"
    cfg.write_text(REGISTRY_CONFIG.format(root=work / "storage", port=port,
                                          debug_port=free_port(), extra=""))
    log, pid_file = work / "registry.log", work / "registry.pid"
    with open(log, "ab") as out:
        first = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    pid_file.write_text(f"{first.pid}\n")
    try:
        _wait_answering(f"http://127.0.0.1:{port}/v2/")
        yield DeviceRegistry(Registry(f"127.0.0.1:{port}", work / "storage", cfg, first.pid),
                             pid_file, log)
    finally:
        pid = int(pid_file.read_text())  # the restarted registry, or still the first one
        if running(pid):
            stop_pid(pid, 10.0)
        if first.poll() is None:
            stop_pid(first.pid, 10.0)
        first.wait(timeout=10)


