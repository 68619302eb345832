"""Unsigned bundles only when asked; a bundle is reused only under the key in use (issue 13).

A hub without ``keys/deltaport.key`` built unsigned bundles that every device refused,
and after the key was added ``deploy`` reused the unsigned bundle instead of building
a signed one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from deltaport.errors import StateError
from deltaport.fleet import device_images, queries
from deltaport.fleet.db import session_scope
from deltaport.fleet.documents import Inventory, InventoryEntry
from deltaport.fleet.models import DeploymentSet
from deltaport.pipelines import image_to_device as i2d
from deltaport.pipelines.manifest import parse_manifest
from deltaport.storage.folder import FolderStore
from tests.fleet.fakes import CountingRanker, FakeBuilder, FakeRegistry, FakeSigner

COMPOSE = b"services:\n  app:\n    image: reg.io/app:2\n"


@pytest.fixture
def fleet(engine: Engine, tmp_path: Path) -> tuple[Engine, FakeRegistry]:
    registry = FakeRegistry()
    registry.add("reg.io/app:1", ["os", "app1"])
    registry.add("reg.io/app:2", ["os", "app2"])
    with session_scope(engine) as s:
        for name in registry.images:
            i2d.register(s, reference=f"docker://{name}", name=None, reader=registry,
                         signer=FakeSigner(), signatures_dir=tmp_path / "sigs")
        for device in ("a", "b"):
            queries.add_device(s, name=device, link_rate_bps=1_000_000)
            entry = InventoryEntry(registry.images["reg.io/app:1"].image_id, "reg.io/app:1")
            device_images.record_inventory(s, device=queries.get_device(s, device),
                                     inventory=Inventory((entry,)))
    return engine, registry


def _deploy(engine: Engine, tmp_path: Path, builder: FakeBuilder, device: str,
            unsigned: bool = False) -> i2d.DeployResult:
    request = i2d.DeployRequest(manifest=parse_manifest(COMPOSE), requested_by="op",
                                contact_email="op@example.com", device_names=(device,),
                                unsigned=unsigned)
    return i2d.deploy(engine, request, ranker=CountingRanker(), builder=builder,
                      store=FolderStore(tmp_path / "outbox"), work_dir=tmp_path / "work")


def test_no_signing_key_refuses_and_records_nothing(
        fleet: tuple[Engine, FakeRegistry], tmp_path: Path) -> None:
    engine, _ = fleet
    builder = FakeBuilder(signer=None)
    with pytest.raises(StateError, match=r"no bundle signing key.*--unsigned"):
        _deploy(engine, tmp_path, builder, "a")
    assert builder.built == []
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(DeploymentSet)) == 0


def test_unsigned_when_asked(fleet: tuple[Engine, FakeRegistry], tmp_path: Path) -> None:
    engine, _ = fleet
    result = _deploy(engine, tmp_path, FakeBuilder(signer=None), "a", unsigned=True)
    assert len(result.built) == 1 and result.state == "pending"


@pytest.mark.parametrize("before", [None, "old-key"], ids=["unsigned-then-key", "key-rotated"])
def test_a_bundle_is_reused_only_under_the_key_in_use(
        fleet: tuple[Engine, FakeRegistry], tmp_path: Path, before: str | None) -> None:
    engine, registry = fleet
    first = _deploy(engine, tmp_path, FakeBuilder(signer=before), "a", unsigned=True)
    same = _deploy(engine, tmp_path, FakeBuilder(signer=before), "b", unsigned=True)
    assert same.reused == first.built and same.built == ()  # same key: reused
    with session_scope(engine) as s:  # a third device with the same inventory as a and b
        queries.add_device(s, name="c", link_rate_bps=1_000_000)
        entry = InventoryEntry(registry.images["reg.io/app:1"].image_id, "reg.io/app:1")
        device_images.record_inventory(s, device=queries.get_device(s, "c"),
                                 inventory=Inventory((entry,)))
    now = FakeBuilder(signer="new-key")
    again = _deploy(engine, tmp_path, now, "c")
    assert again.reused == () and len(again.built) == 1 and again.built != first.built
    assert len(now.built) == 1  # built again, signed with the key in use
