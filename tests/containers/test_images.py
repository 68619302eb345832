"""deltaport's own container images, run in real podman: the agent image takes bundles
into a real device registry and carries nothing of the server; the hub image serves
its API; the examples run the agent; and the agent delivers its own next version to
the device through a bundle, like any other module's image.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from deltaport.bundle import BundleReader, generate_keypair, load_private_key
from deltaport.delta.image import create_image_delta
from deltaport.errors import NotFoundError
from deltaport.oci import TransportOptions, open_source
from tests.containers.conftest import BuiltImages
from tests.fixtures.services import Registry, free_port, run_registry

pytestmark = pytest.mark.slow

OPTS = TransportOptions(insecure=True)
DEVICE = "truck-0042"
EXAMPLES = Path(__file__).resolve().parents[2] / "containers" / "examples"
HUB_ONLY = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg", "aiosmtpd")
SERVE_TIMEOUT = 60.0


def _image_id(registry: Registry, name: str) -> str | None:
    try:
        with open_source(registry.ref(name), OPTS) as src:
            return src.image_id()
    except NotFoundError:
        return None


def _agent_config(root: Path, registry: Registry) -> Path:
    """EXAMPLES/agent.toml with the test's device registry: what a device mounts."""
    text = (EXAMPLES / "agent.toml").read_text()
    text = text.replace('"docker://127.0.0.1:5000"', f'"docker://{registry.host}"')
    text = text.replace("poll_interval = 30", "poll_interval = 0.2")
    path = root / "agent.toml"
    path.write_text(text)
    return path


def _run_agent_once(images: BuiltImages, image: str, root: Path, registry: Registry,
                    keys: Path) -> None:
    """One pass of the agent container, mounted as containers/examples/compose.yaml does."""
    for sub in ("inbox", "state"):
        (root / sub).mkdir(exist_ok=True)
    images.podman(
        "run", "--rm", "--network", "host",
        "-v", f"{_agent_config(root, registry)}:/etc/deltaport/agent.toml:ro",
        "-v", f"{keys}:/etc/deltaport/keys:ro",
        "-v", f"{root / 'state'}:/var/lib/deltaport/state",
        "-v", f"{root / 'inbox'}:/var/lib/deltaport/inbox",
        image, "--once")


def test_the_agent_image_carries_nothing_of_the_server(built_images: BuiltImages) -> None:
    probe = ("import importlib.util, json; "
             f"print(json.dumps([m for m in {list(HUB_ONLY)!r} if importlib.util.find_spec(m)]))")
    found = built_images.podman("run", "--rm", "--entrypoint", "python3", built_images.agent,
                                "-c", probe).stdout
    assert json.loads(found) == []
    refused = built_images.podman("run", "--rm", "--entrypoint", "deltaport", built_images.agent,
                                  "hub", "serve", check=False)
    assert refused.returncode == 2
    assert "needs the hub extras" in refused.stderr
    labels = json.loads(built_images.podman("image", "inspect", built_images.agent).stdout)[0]
    assert labels["Config"]["Labels"]["io.deltaport.role"] == "agent"
    assert set(labels["Config"]["Volumes"]) == {"/var/lib/deltaport/state",
                                                "/var/lib/deltaport/inbox"}


def _next_agent(images: BuiltImages, root: Path) -> str:
    """Agent 2: agent 1 with one more file, as a release of deltaport would change it."""
    context = root / "agent-2"
    context.mkdir()
    (context / "release").write_text("2\n")
    (context / "Containerfile").write_text(
        f"FROM {images.agent}\nCOPY release /etc/deltaport/release\n")
    image = f"{images.agent}-2"
    done = subprocess.run(["buildah", "bud", "--quiet", "--isolation", "chroot",
                           "--layers=false", "-t", image, str(context)], env=images.env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return image


def test_the_agent_delivers_its_own_next_version_through_a_bundle(
        built_images: BuiltImages, tmp_path: Path) -> None:
    """The device runs agent 1 in a container; agent 2 (one changed file) arrives as a
    bundle in its inbox; agent 1 rebuilds agent 2 in the device registry; the engine pulls
    agent 2 from there and it runs: the agent's update went the way every module's does."""
    pm = built_images
    keys = generate_keypair(tmp_path / "keys")
    agent_2 = _next_agent(pm, tmp_path)
    with run_registry(tmp_path / "cloud") as cloud, run_registry(tmp_path / "device") as device:
        for image, where in ((pm.agent, cloud.ref("deltaport-agent:1")),
                             (agent_2, cloud.ref("deltaport-agent:2")),
                             (pm.agent, device.ref("deltaport-agent:1"))):  # provisioning
            pm.podman("push", "--quiet", "--tls-verify=false", image, where)
        bundle = tmp_path / "agent-2.bundle"
        summary = create_image_delta(cloud.ref("deltaport-agent:2"),
                                     [cloud.ref("deltaport-agent:1")], bundle,
                                     signing_key=load_private_key(keys.private_key_path),
                                     options=OPTS, extra_content={"devices": [DEVICE]})
        with BundleReader(bundle) as reader:
            target = str(reader.index.content["target"]["name"])
        (tmp_path / "inbox").mkdir()
        (tmp_path / "inbox" / "agent-2.bundle").write_bytes(bundle.read_bytes())

        _run_agent_once(pm, pm.agent, tmp_path, device, keys.public_key_path.parent)

        assert _image_id(device, target) == summary.image_id
        assert sorted(p.name for p in (tmp_path / "inbox" / "done").iterdir()) == [
            "agent-2.bundle"]
        pm.podman("rmi", agent_2)  # the engine knows agent 2 only from the device registry
        local = f"{device.host}/{target}"
        pm.podman("pull", "--quiet", "--tls-verify=false", f"docker://{local}")
        release = pm.podman("run", "--rm", "--entrypoint", "cat", local,
                            "/etc/deltaport/release").stdout
        version = pm.podman("run", "--rm", "--entrypoint", "deltaport", local,
                            "--version").stdout
    assert release == "2\n"
    assert version.startswith("deltaport ")
    # the agent image is ~250 MB; its update costs the new file and the image's metadata
    image_bytes = int(json.loads(pm.podman("image", "inspect", pm.agent).stdout)[0]["Size"])
    assert summary.bundle_bytes * 10_000 < image_bytes, (summary.bundle_bytes, image_bytes)


def test_the_hub_image_serves_its_api(built_images: BuiltImages, tmp_path: Path) -> None:
    pm = built_images
    data = tmp_path / "hub"
    data.mkdir()
    port = free_port()
    made = pm.podman("run", "--rm", "-v", f"{data}:/var/lib/deltaport-hub", pm.hub,
                     "hub", "init", "/var/lib/deltaport-hub", "--port", str(port),
                     "--operator", "alice", "--json")
    token = json.loads(made.stdout)["token"]
    name = f"hub-{port}"
    pm.podman("run", "-d", "--name", name, "--network", "host",
              "-v", f"{data}:/var/lib/deltaport-hub", pm.hub)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/deployments"
        deadline = time.monotonic() + SERVE_TIMEOUT
        while True:
            try:
                answered = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, pm.podman("logs", name, check=False).stderr
                time.sleep(0.2)
        assert answered.status_code == 200, answered.text
        assert httpx.get(url, timeout=5).status_code == 401
        assert (data / "keys" / "deltaport.pub").is_file()
    finally:
        pm.podman("rm", "--force", "--time", "5", name, check=False)


@pytest.mark.parametrize(("example", "options"), [
    ("compose.yaml", ()),
    ("deployment.iotedge.json", ("--var", "AGENT_TAG=0.1.0")),
])
def test_the_examples_run_the_agent_image(example: str, options: tuple[str, ...]) -> None:
    done = subprocess.run([sys.executable, "-m", "deltaport.cli.main", "manifest", "images",
                           str(EXAMPLES / example), *options, "--json"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert {"module": "deltaport-agent",
            "reference": "127.0.0.1:5000/deltaport-agent:0.1.0"} in doc["images"]
    assert doc["warnings"] == []


def test_the_readme_block_names_what_the_script_builds(built_images: BuiltImages) -> None:
    """The README's images block: the names it promises and its run command, as written."""
    from tests.test_readme import readme_block_after

    block = readme_block_after("## deltaport's own container images")
    build, run = (line.split("#")[0].strip() for line in block.strip().splitlines())
    assert build == "scripts/build-images.sh --tag 0.1.0"
    promised = block.split("# prints ")[1].splitlines()[0].split()
    assert promised == ["localhost/deltaport-agent:0.1.0", "and", "localhost/deltaport-hub:0.1.0"]
    # the fixture built the same script with --tag test: the run line, at that tag
    words = run.replace("localhost/deltaport-agent:0.1.0", built_images.agent).split()
    assert words[0] == "podman"
    done = built_images.podman(*words[1:], timeout=120)
    assert "--config" in done.stdout and "agent" in done.stdout.lower()
