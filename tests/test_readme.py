"""The README is a contract: its "hub of your own" commands run as written (issue 13).

The block is taken from README.md as it stands and run by bash, top to bottom, in an
empty folder with ``.venv/bin`` on PATH — in a network namespace of its own, so the
fixed ports it names (8443, 5000) are free and nothing it starts outlives the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HUB_SECTION = "**A hub of your own, over https**"
BLOCK_RE = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def readme_block_after(marker: str) -> str:
    """The first ```sh block after MARKER in README.md."""
    text = README.read_text()
    start = text.index(marker)
    match = BLOCK_RE.search(text, start)
    assert match is not None, f"no sh block after {marker!r} in README.md"
    return match.group(1)


def test_the_hub_block_is_found() -> None:
    block = readme_block_after(HUB_SECTION)
    assert "deltaport hub init" in block and "deltaport agent run --once" in block


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a private network namespace")
def test_the_hub_of_your_own_runs_as_written(tmp_path: Path) -> None:
    block = readme_block_after(HUB_SECTION)
    script = tmp_path / "readme.sh"
    # stop what the block started in the background, whatever happens
    script.write_text("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
                      + block)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for name in [k for k in env if k.startswith("DELTAPORT_")]:
        del env[name]  # the block sets what it needs; nothing of this machine's leaks in
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", f"ip link set lo up && exec bash {script}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}"
                   for p in tmp_path.glob("*.log"))
    assert done.returncode == 0, done.stdout + done.stderr + logs
    seen = re.search(r"device truck-17: last seen (\S+)", done.stdout)
    assert seen is not None and seen.group(1).startswith("20"), done.stdout  # a time, not never
    assert (tmp_path / "state").is_dir() and (tmp_path / "device.token").stat().st_size > 0


USING_IT = "## Using it"
REGISTRY_PRELUDE = """\
printf 'version: 0.1\\nstorage: {filesystem: {rootdirectory: %s/registry}}\\n' "$PWD" > registry.yml
printf 'http: {addr: 127.0.0.1:5000}\\n' >> registry.yml
docker-registry serve registry.yml > registry.log 2>&1 &
for _ in $(seq 50); do curl -s http://127.0.0.1:5000/v2/ >/dev/null && break; sleep 0.1; done
deltaport image copy oci:./layout-v2:v2 docker://127.0.0.1:5000/app:v2 --insecure
"""


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a private network namespace")
def test_using_it_by_hand_runs_as_written(tmp_path: Path) -> None:
    """The README's by-hand block, given the two layouts and the registry it names."""
    from tests.fixtures.images import build_image, write_oci_layout

    v1, v2 = build_image(0), build_image(1)
    write_oci_layout(tmp_path / "layout-v1", v1, tag="v1")
    write_oci_layout(tmp_path / "layout-v2", v2, tag="v2")
    script = tmp_path / "readme.sh"
    script.write_text("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
                      + REGISTRY_PRELUDE + readme_block_after(USING_IT)
                      + "deltaport image inspect docker://127.0.0.1:5000/app:v2-rebuilt"
                        " --insecure > rebuilt.json\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", f"ip link set lo up && exec bash {script}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "app-v2.bundle").stat().st_size > 0
    rebuilt = (tmp_path / "rebuilt.json").read_text()
    assert v2.image_id in rebuilt  # the bundle rebuilt exactly v2 from v1


FLEET = "Running a fleet:"
NEEDS_A_DEVICE = ("deltaport hub serve", "deltaport agent run")  # run by the hub test above
NEWEST = 'status deployment "$(deltaport status deployments --json | jq -r \'.[0].id\')"'


def test_the_fleet_block_names_no_host_that_does_not_resolve() -> None:
    block = readme_block_after(FLEET)
    hosts = set(re.findall(r"(?:docker://)?([a-z][\w.-]*):\d+/", block))
    assert hosts <= {"localhost"}, hosts  # registry:5000, hub:5000 resolve nowhere
    assert "deltaport deploy compose.yml" in block and "status deployment ID" in block


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a private network namespace")
def test_running_a_fleet_runs_as_written(tmp_path: Path) -> None:
    """The fleet block on a local data directory, given the registry "Using it" names;
    ID is the deployment the block made, as `status deployments` lists it."""
    from tests.fixtures.images import build_image, write_oci_layout

    write_oci_layout(tmp_path / "layout-v2", build_image(1), tag="v2")
    lines = [line for line in readme_block_after(FLEET).splitlines()
             if not line.startswith(NEEDS_A_DEVICE)]
    body = "\n".join(lines).replace("status deployment ID", NEWEST) + "\n"
    script = tmp_path / "readme.sh"
    script.write_text("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
                      + REGISTRY_PRELUDE
                      + "deltaport hub init ./hub --operator alice --json > hub-init.json\n"
                      + 'export DELTAPORT_HOME="$PWD/hub"\n' + body)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAPORT_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", f"ip link set lo up && exec bash {script}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "registered 127.0.0.1:5000/app:v2" in done.stdout, done.stdout
    assert "deployment d-" in done.stdout and "bundles built: 1" in done.stdout, done.stdout
    assert "truck-42" in done.stdout.rsplit("deployment d-", 1)[1], done.stdout
