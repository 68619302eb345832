"""The names images get on a device: different registries never collide, pins keep working.

Issue 10: ``ghcr.io/acme/app:1`` and ``docker.io/acme/app:1`` became the same
``localhost:5000/acme/app:1`` on a device, and ``app@sha256:<cloud manifest digest>``
named a manifest the device registry never has (its manifest is rebuilt). The hub and
the bundle builder now share one naming rule (:func:`scoped_path`), and a pinned
reference resolves to the registered image it pins, whose image ID the device checks.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from deltaport.bundle.keys import KeyPair, generate_keypair, load_public_key
from deltaport.delta.image import target_name
from deltaport.desired import DesiredState, decode_envelope
from deltaport.errors import UnknownObjectError, UsageError
from deltaport.fleet import device_images, queries
from deltaport.fleet.db import session_scope
from deltaport.fleet.documents import Inventory, InventoryEntry
from deltaport.manifests import local_reference, parse_manifest
from deltaport.oci.reference import parse_docker_name, scoped_path
from deltaport.pipelines import image_to_device as i2d
from deltaport.pipelines.manifest_to_device import activate, desired_key
from deltaport.storage.folder import FolderStore
from tests.fleet.fakes import CountingRanker, FakeBuilder, FakeRegistry, FakeSigner

PIN = "sha256:" + "ab" * 32


# --- the naming rule ------------------------------------------------------------------


@pytest.mark.parametrize(("reference", "path"), [
    ("nginx", "library/nginx:latest"),
    ("docker.io/library/nginx:latest", "library/nginx:latest"),
    ("index.docker.io/acme/app:1", "acme/app:1"),
    ("docker.io/acme/app:1", "acme/app:1"),
    ("ghcr.io/acme/app:1", "ghcr.io/acme/app:1"),
    ("Reg.Example:5000/acme/app:1", "reg.example_5000/acme/app:1"),
    ("localhost:5000/app:2", "localhost_5000/app:2"),
    ("localhost/app", "localhost/app:latest"),
    ("[fe80::1]:5000/app:1", "ip6_fe80-0000-0000-0000-0000-0000-0000-0001_5000/app:1"),
    (f"ghcr.io/acme/app@{PIN}", f"ghcr.io/acme/app:sha256-{'ab' * 32}"),
    (f"acme/app:1@{PIN}", f"acme/app:sha256-{'ab' * 32}"),  # the digest decides
])
def test_scoped_path(reference: str, path: str) -> None:
    assert scoped_path(parse_docker_name(reference)) == path
    assert local_reference(reference, "localhost:5000") == f"localhost:5000/{path}"


def test_docker_io_with_one_component_is_library() -> None:
    """``docker.io/x`` is Docker Hub's ``library/x``: it was read as host docker.io, path x."""
    name = parse_docker_name("docker.io/redis:7")
    assert (name.host, name.repository) == ("docker.io", "library/redis")
    assert parse_docker_name("docker.io/redis:7") == parse_docker_name("redis:7")


def test_bundle_target_and_manifest_rewrite_agree() -> None:
    """The bundle builder's target name is where the rendered manifest looks."""
    for ref in ("ghcr.io/acme/app:1", "acme/app:1", "nginx", "reg.io:5000/x/y:2"):
        assert local_reference(ref, "l:1") == f"l:1/{target_name('docker://' + ref)}"


_LABEL = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8)
_HOSTS = st.one_of(
    st.builds(lambda a, b, p: f"{a}.{b}" + (f":{p}" if p else ""),
              _LABEL, _LABEL, st.integers(0, 65535)),
    st.builds(lambda p: f"localhost:{p}", st.integers(1, 65535)),
    st.builds(lambda n, p: f"[{n}::1]" + (f":{p}" if p else ""),
              st.integers(0, 0xFFFF).map(lambda i: f"{i:x}"), st.integers(0, 65535)),
    st.just("docker.io"),
)
_PATHS = st.one_of(st.sampled_from(["app", "acme/app", "a/b/c", "a_5000/x", "localhost/x",
                                    "0.0/0", "ip6_x/y"]),
                   st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+)?(?:/[a-z0-9]+)?", fullmatch=True))


@given(_HOSTS, _HOSTS, _PATHS, _PATHS)
def test_different_images_never_share_a_device_name(a: str, b: str, path_a: str,
                                                     path_b: str) -> None:
    """One to one: the same path only for the same registry and repository."""
    name_a, name_b = parse_docker_name(f"{a}/{path_a}:1"), parse_docker_name(f"{b}/{path_b}:1")
    same = (name_a.host.lower(), name_a.repository) == (name_b.host.lower(), name_b.repository)
    assert (scoped_path(name_a) == scoped_path(name_b)) == same


def test_a_host_that_cannot_be_a_path_component_is_refused() -> None:
    with pytest.raises(UsageError, match="path component"):
        scoped_path(parse_docker_name("a-.example/app:1"))


# --- through the hub ----------------------------------------------------------------


@dataclass
class Hub:
    engine: Engine
    store: FolderStore
    registry: FakeRegistry
    builder: FakeBuilder
    work: Path
    keys: KeyPair

    def register(self, name: str) -> str:
        with session_scope(self.engine) as s:
            return i2d.register(s, reference=f"docker://{name}", name=None,
                                reader=self.registry, signer=FakeSigner(),
                                signatures_dir=self.work / "sigs").image_id

    def has(self, device: str, *names: str) -> None:
        entries = tuple(InventoryEntry(self.registry.images[n].image_id, n) for n in names)
        with session_scope(self.engine) as s:
            device_images.record_inventory(s, device=queries.get_device(s, device),
                                     inventory=Inventory(entries))

    def deploy(self, compose: str, device: str) -> i2d.DeployResult:
        request = i2d.DeployRequest(manifest=parse_manifest(compose.encode()), requested_by="op",
                                    contact_email="op@example.com", device_names=(device,))
        return i2d.deploy(self.engine, request, ranker=CountingRanker(), builder=self.builder,
                          store=self.store, work_dir=self.work,
                          manifest_key=self.keys.private_key_path)

    def desired(self, device: str) -> DesiredState:
        data = (self.store.root / desired_key(device)).read_bytes()
        return decode_envelope(data, [load_public_key(self.keys.public_key_path)], device=device)


@pytest.fixture
def hub(engine: Engine, tmp_path: Path) -> Iterator[Hub]:
    h = Hub(engine, FolderStore(tmp_path / "outbox"), FakeRegistry(), FakeBuilder(),
            tmp_path / "work", generate_keypair(tmp_path / "keys", "manifest"))
    with session_scope(engine) as s:
        queries.add_device(s, name="truck", link_rate_bps=1_000_000)
    yield h


def test_two_registries_two_images_on_the_device(hub: Hub) -> None:
    hub.registry.add("ghcr.io/acme/app:1", ["os", "ghcr"])
    hub.registry.add("acme/app:1", ["os", "hub"])
    ghcr, dockerhub = hub.register("ghcr.io/acme/app:1"), hub.register("acme/app:1")
    assert ghcr != dockerhub
    result = hub.deploy("services:\n  a:\n    image: ghcr.io/acme/app:1\n"
                        "  b:\n    image: docker.io/acme/app:1\n", "truck")
    targets = sorted(i2d.device_target_name(spec.target) for spec in hub.builder.built)
    assert targets == ["acme/app:1", "ghcr.io/acme/app:1"]
    assert result.state == "pending"
    hub.has("truck", "ghcr.io/acme/app:1", "acme/app:1")
    with session_scope(hub.engine) as s:
        activate(s, set_id=result.deployment_id, store=hub.store,
                 manifest_key=hub.keys.private_key_path)
    desired = hub.desired("truck")
    assert desired.image_of("a").reference == "localhost:5000/ghcr.io/acme/app:1"
    assert desired.image_of("a").image_id == ghcr
    assert desired.image_of("b").reference == "localhost:5000/acme/app:1"
    assert desired.image_of("b").image_id == dockerhub
    services = desired.manifest["services"]
    assert [services[m]["image"] for m in "ab"] == [desired.image_of(m).reference for m in "ab"]


@pytest.mark.parametrize("spelling", ["reg.io/app@{digest}", "reg.io/app:2@{digest}"])
def test_a_pinned_reference_resolves_to_the_image_it_pins(hub: Hub, spelling: str) -> None:
    """The device gets the registered image's name; its image ID is what the pin names."""
    hub.registry.add("reg.io/app:2", ["os", "app2"])
    hub.registry.add("reg.io/app:3", ["os", "app3"])
    pinned = hub.register("reg.io/app:2")
    hub.register("reg.io/app:3")  # newer, same repository: the pin must not drift to it
    digest = hub.registry.images["reg.io/app:2"].manifest_digest
    hub.has("truck", "reg.io/app:2")
    result = hub.deploy(f"services:\n  app:\n    image: {spelling.format(digest=digest)}\n",
                        "truck")
    assert result.state == "active" and not hub.builder.built
    module = hub.desired("truck").image_of("app")
    assert (module.reference, module.image_id) == ("localhost:5000/reg.io/app:2", pinned)
    assert hub.desired("truck").manifest["services"]["app"]["image"] == module.reference


def test_a_pin_of_no_registered_manifest_is_refused(hub: Hub) -> None:
    hub.registry.add("reg.io/app:2", ["os", "app2"])
    hub.register("reg.io/app:2")
    with pytest.raises(UnknownObjectError, match="not registered"):
        hub.deploy(f"services:\n  app:\n    image: reg.io/app@{PIN}\n", "truck")


def test_like_wildcards_in_a_name_match_nothing_else(hub: Hub) -> None:
    """``_`` in a pinned name is a character, not SQL LIKE's any-character."""
    hub.registry.add("reg.io/axb:1", ["os", "x"])
    hub.register("reg.io/axb:1")
    digest = hub.registry.images["reg.io/axb:1"].manifest_digest
    with session_scope(hub.engine) as s:
        assert queries.find_image(s, f"reg.io/axb@{digest}").name == "reg.io/axb:1"
        with pytest.raises(UnknownObjectError):
            queries.find_image(s, f"reg.io/a_b@{digest}")
