"""A real container engine per demo device: ``podman system service`` with its own storage.

Each demo device gets the engine a real device would have: its own podman (root,
vfs storage, runc — what works on these machines, ../shared/RECIPES.md), serving the
Docker Engine API on a unix socket that the device's agent drives. Its registries.conf
marks the device's local registry as plain http: podman, unlike Docker, does not treat
127.0.0.0/8 as insecure by itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from deltaport.demo.processes import stop_process
from deltaport.errors import StateError, UsageError

START_TIMEOUT = 60.0  # seconds for the service to answer /version
POLL = 0.1


@dataclass(frozen=True)
class Engine:
    """A running podman service."""

    docker_host: str  # "unix:///…/podman.sock", what agent.toml's runtime.docker_host takes
    root: Path
    pid: int

    def env(self) -> dict[str, str]:
        return config_env(self.root)


def config_env(root: Path) -> dict[str, str]:
    """The environment that points podman at the config files under ROOT."""
    return {**os.environ,
            "CONTAINERS_CONF": str(root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf")}


def write_config(root: Path, insecure_registries: Sequence[str]) -> None:
    """containers.conf, storage.conf and registries.conf under ROOT."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    (root / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{root}/root"\nrunroot = "{root}/run"\n')
    (root / "registries.conf").write_text(
        "unqualified-search-registries = []\n"
        + "".join(f'[[registry]]\nlocation = "{r}"\ninsecure = true\n'
                  for r in insecure_registries))


def _answers(sock: Path) -> bool:
    transport = httpx.HTTPTransport(uds=str(sock))
    try:
        with httpx.Client(transport=transport, base_url="http://podman", timeout=2) as http:
            return http.get("/v1.41/version").status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def run_podman_service(root: Path, insecure_registries: Sequence[str] = ()) -> Iterator[Engine]:
    """``podman system service --time=0`` on ROOT/podman.sock until the block ends.

    Raises:
        UsageError: podman is not installed.
        StateError: the service did not answer in time (its log is in the message).
    """
    exe = shutil.which("podman")
    if exe is None:
        raise UsageError("podman is not installed (scripts/setup.sh installs it)")
    write_config(root, insecure_registries)
    sock, log_path = root / "podman.sock", root / "service.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([exe, "system", "service", "--time=0", f"unix://{sock}"],
                                stdout=log, stderr=subprocess.STDOUT, env=config_env(root))
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(sock):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise StateError(f"podman service under {root} did not start: "
                                 f"{log_path.read_text()[-2000:]}")
            time.sleep(POLL)
        yield Engine(f"unix://{sock}", root, proc.pid)
    finally:
        _remove_all(root)
        stop_process(proc)


def _remove_all(root: Path) -> None:
    """Stop and remove every container of this podman (the demo leaves nothing running)."""
    exe = shutil.which("podman")
    if exe is not None:
        subprocess.run([exe, "rm", "--all", "--force", "--time", "2"], env=config_env(root),
                       capture_output=True, timeout=120, check=False)
