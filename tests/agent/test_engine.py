"""docker_host: the rebuilt image is loaded into a real Docker-API engine (podman's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deltaport.agent import Agent
from deltaport.agent.engine import engine_client, load_errors
from deltaport.demo.processes import stop_process
from tests.agent.conftest import World, agent_config, image_id_in
from tests.fixtures.services import Registry


@pytest.fixture
def podman_socket(tmp_path: Path) -> Iterator[str]:
    """``podman system service`` on a unix socket, with its own storage; stopped by PID."""
    exe = shutil.which("podman")
    assert exe is not None, "podman is not installed (scripts/setup.sh installs it)"
    root = tmp_path / "pm"
    root.mkdir()
    (root / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = ["nofile=20000:20000"]\n'
        '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    (root / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{root}/root"\nrunroot = "{root}/run"\n')
    (root / "registries.conf").write_text("unqualified-search-registries = []\n")
    env = {**os.environ, "CONTAINERS_CONF": str(root / "containers.conf"),
           "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
           "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf")}
    sock = root / "podman.sock"
    with open(root / "service.log", "wb") as log:
        proc = subprocess.Popen([exe, "system", "service", "--time=0", f"unix://{sock}"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with engine_client(f"unix://{sock}") as http:
                    if http.get("/v1.41/version").status_code == 200:
                        break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, \
                (root / "service.log").read_text()
            time.sleep(0.1)
        yield f"unix://{sock}"
    finally:
        stop_process(proc)


def test_load_errors_are_found_in_the_stream() -> None:
    stream = b'{"stream":"Loading"}\n{"errorDetail":{"message":"x"},"error":"no space"}\n'
    assert load_errors(stream) == ["no space"]
    assert load_errors(b'{"stream":"Loaded image: a:b"}\n') == []


def test_rebuilt_image_is_loaded_into_the_engine(
        tmp_path: Path, world: World, device_registry: Registry, podman_socket: str) -> None:
    config = agent_config(tmp_path, world, device_registry.host, docker_host=podman_socket)
    config.inbox.mkdir(parents=True)
    (config.inbox / "v2.bundle").write_bytes(world.small.path.read_bytes())
    with Agent(config) as agent:
        report = agent.run_once()
        assert report.reconstructed == 1
        message = agent.state.pending_messages(1)[0]
    engine_name = f"{device_registry.host}/{world.small.target}"
    assert message["engine"] == {"loaded": True, "name": engine_name}
    assert image_id_in(device_registry, world.small.target) == world.small.image_id
    with engine_client(podman_socket) as http:
        inspect = http.get(f"/v1.41/images/{engine_name}/json")
    assert inspect.status_code == 200 and inspect.json()["Id"] == world.small.image_id
