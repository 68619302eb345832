"""deltaport's own images, built once per session by scripts/build-images.sh into a podman
storage of the session's own (vfs, runc: ../shared/RECIPES.md).

The Debian base and the wheels are cached in ``$DELTAPORT_IMAGE_CACHE`` (default
``~/.cache/deltaport/images``, the script's own default), so only the first run pays
for debootstrap.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from deltaport.demo.podman import config_env, write_config

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 900  # seconds: debootstrap, pip download and two buildah builds, cold
TAG = "test"


@dataclass(frozen=True)
class BuiltImages:
    """The images and the podman environment that holds them."""

    env: dict[str, str]
    agent: str  # "localhost/deltaport-agent:test"
    hub: str

    def podman(self, *args: str, timeout: float = 300,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
        return done


@pytest.fixture(scope="session")
def built_images(tmp_path_factory: pytest.TempPathFactory) -> BuiltImages:
    root = tmp_path_factory.mktemp("images-pm")
    write_config(root, ())
    cache = os.environ.get("DELTAPORT_IMAGE_CACHE",
                           str(Path.home() / ".cache" / "deltaport" / "images"))
    env = {**config_env(root), "DELTAPORT_IMAGE_CACHE": cache}
    done = subprocess.run([str(ROOT / "scripts" / "build-images.sh"), "--tag", TAG], env=env,
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    agent, hub = done.stdout.split()
    return BuiltImages(env, agent, hub)
