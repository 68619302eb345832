"""Fixtures for agent tests: keys, a cloud registry with v1/v2/v3 of a small image,
bundles built once with the real ``create_image_delta``, and a fresh device registry.

Images (pushed to the session's cloud registry as demo/app:v1, v2, v3):
- v1, v2: the three-layer test image of tests/fixtures/images.py and its next version;
- v3: v2 plus a 1.5 MB layer of random bytes, so its bundle spans two 1 MiB chunks
  and takes a while over a throttled link.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deltaport.agent import AgentConfig, HubSettings
from deltaport.bundle import BundleReader, generate_keypair, load_private_key
from deltaport.delta.image import create_image_delta
from deltaport.oci import TransportOptions, copy_image, open_source
from tests.fixtures.images import Entry, build_image, default_layers, write_oci_layout
from tests.fixtures.services import Registry, run_registry

DEVICE = "dev-1"
OPTS = TransportOptions(insecure=True)
BIG_LAYER = 1_500_000  # bytes of random data in v3's extra layer


@dataclass(frozen=True)
class BuiltBundle:
    """A bundle file and what it rebuilds."""

    path: Path
    target: str  # target name as signed in the bundle ("app:v2")
    image_id: str
    size: int
    deployment: str | None


@dataclass(frozen=True)
class World:
    """Everything built once per session."""

    cloud: Registry
    trusted_pub: Path
    untrusted_pub: Path
    manifest_key: Path  # signs desired manifests (the hub's manifest key)
    manifest_pub: Path
    v1_diff_ids: tuple[str, ...]
    v1_image_id: str
    small: BuiltBundle  # v2 from v1, for dev-1, deployment dep-1
    small_other: BuiltBundle  # v2 from v1, for dev-2
    small_untrusted: BuiltBundle  # v2 from v1, signed by a key the device does not trust
    big: BuiltBundle  # v3 from v1, for dev-1, deployment dep-3


def _bundle(out: Path, world_cloud: Registry, tag: str, key: Path,
            extra: dict[str, Any]) -> BuiltBundle:
    summary = create_image_delta(world_cloud.ref(f"demo/app:{tag}"),
                                 [world_cloud.ref("demo/app:v1")], out,
                                 signing_key=load_private_key(key), options=OPTS,
                                 extra_content=extra)
    with BundleReader(out) as reader:
        target = str(reader.index.content["target"]["name"])
    return BuiltBundle(out, target, summary.image_id, out.stat().st_size,
                       extra.get("deployment"))


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("agent-world")
    trusted = generate_keypair(root / "trusted")
    untrusted = generate_keypair(root / "untrusted")
    manifest = generate_keypair(root / "manifest")
    big_layers = [*default_layers(1), [
        Entry("data", "dir"),
        Entry("data/blob.bin", data=random.Random(7).randbytes(BIG_LAYER)),
    ]]
    images = {"v1": build_image(0), "v2": build_image(1), "v3": build_image(1, layers=big_layers)}
    with run_registry(root / "cloud") as cloud:
        for tag, image in images.items():
            layout = write_oci_layout(root / f"layout-{tag}", image, tag="t")
            copy_image(f"oci:{layout}:t", cloud.ref(f"demo/app:{tag}"), options=OPTS)
        b = root / "bundles"
        b.mkdir()
        mine = {"devices": [DEVICE], "deployment": "dep-1"}
        yield World(
            cloud=cloud,
            trusted_pub=trusted.public_key_path,
            untrusted_pub=untrusted.public_key_path,
            manifest_key=manifest.private_key_path,
            manifest_pub=manifest.public_key_path,
            v1_diff_ids=tuple(images["v1"].diff_ids),
            v1_image_id=images["v1"].image_id,
            small=_bundle(b / "small.bundle", cloud, "v2", trusted.private_key_path, mine),
            small_other=_bundle(b / "other.bundle", cloud, "v2", trusted.private_key_path,
                                {"devices": ["dev-2"], "deployment": "dep-1"}),
            small_untrusted=_bundle(b / "untrusted.bundle", cloud, "v2",
                                    untrusted.private_key_path, mine),
            big=_bundle(b / "big.bundle", cloud, "v3", trusted.private_key_path,
                        {"devices": [DEVICE], "deployment": "dep-3"}),
        )


@pytest.fixture
def device_registry(tmp_path: Path, world: World) -> Iterator[Registry]:
    """A fresh device registry holding demo/app:v1 (the source of every bundle)."""
    with run_registry(tmp_path / "device-registry") as reg:
        copy_image(world.cloud.ref("demo/app:v1"), reg.ref("demo/app:v1"), options=OPTS)
        yield reg


@pytest.fixture
def empty_registry(tmp_path: Path) -> Iterator[Registry]:
    """A device registry with no image at all."""
    with run_registry(tmp_path / "empty-registry") as reg:
        yield reg


def agent_config(tmp_path: Path, world: World, registry_host: str, *,
                 hub_url: str | None = None, token: str = "tok-1",
                 **overrides: Any) -> AgentConfig:
    """An AgentConfig for tests (inbox-only without ``hub_url``)."""
    settings: dict[str, Any] = {
        "device": DEVICE,
        "trusted_keys": (world.trusted_pub,),
        "inbox": tmp_path / "inbox",
        "state_dir": tmp_path / "state",
        "registry": f"docker://{registry_host}",
        "desired_manifest": tmp_path / "desired.json",
        "hub": HubSettings(hub_url, token, timeout=5.0,  # plain-HTTP test hubs say so
                           insecure=hub_url.startswith("http://")) if hub_url else None,
        "poll_interval": 0.2,
    }
    settings.update(overrides)
    return AgentConfig(**settings)


def image_id_in(registry: Registry, name: str) -> str | None:
    """The image ID a tag names in a registry, or None when the tag is absent."""
    from deltaport.errors import NotFoundError

    try:
        with open_source(registry.ref(name), OPTS) as src:
            return src.image_id()
    except NotFoundError:
        return None
