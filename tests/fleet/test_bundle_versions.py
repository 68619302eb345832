"""The hub's release counter (issue 11, item 2): each bundle is signed with a version
from a per-name counter and an expiry; a stored bundle is reused only while no newer
release of its name is for another image, so a redeploy makes a NEW, higher version."""

from __future__ import annotations

import time

from sqlalchemy import select

from deltaport.fleet import queries
from deltaport.fleet.db import session_scope
from deltaport.fleet.models import BundleRelease, BundleVersion
from deltaport.pipelines import image_to_device as i2d
from tests.fleet.test_pipelines import Fleet, fleet  # noqa: F401  (the fixture)

DAY = 86_400


def _versions(f: Fleet) -> dict[str, tuple[int, str]]:
    with session_scope(f.engine) as s:
        return {c.target_name: (c.last_version, c.last_image_id)
                for c in s.scalars(select(BundleVersion))}


def test_bundles_are_signed_with_a_version_per_name_and_an_expiry(fleet: Fleet) -> None:  # noqa: F811
    before = time.time()
    fleet.deploy(("a", "b", "c"), release_ttl=10 * DAY)
    specs = fleet.builder.built
    assert len(specs) == 4 and all(s.release is not None for s in specs)
    by_name: dict[str, set[int]] = {}
    for spec in specs:
        assert spec.release is not None
        assert before + 10 * DAY - 5 <= spec.release.expires_at <= time.time() + 10 * DAY
        by_name.setdefault(i2d.device_target_name(spec.target), set()).add(
            spec.release.version)
    # one release per name and image, whatever the devices' sources
    assert by_name == {"reg.io/app:2": {1}, "reg.io/web:2": {1}}
    assert _versions(fleet) == {"reg.io/app:2": (1, fleet.image_id("reg.io/app:2")),
                                "reg.io/web:2": (1, fleet.image_id("reg.io/web:2"))}
    with session_scope(fleet.engine) as s:
        assert len(list(s.scalars(select(BundleRelease)))) == 4


def test_a_bundle_older_than_a_newer_release_of_another_image_is_rebuilt(
        fleet: Fleet) -> None:  # noqa: F811
    fleet.deploy(("a", "b"))
    assert len(fleet.builder.built) == 2
    # a later deployment shipped another image as app:2 (release 5): the stored app:2
    # bundle (release 1) would be refused by a device holding release 5
    with session_scope(fleet.engine) as s:
        counter = s.get(BundleVersion, "reg.io/app:2")
        assert counter is not None
        counter.last_version, counter.last_image_id = 5, "sha256:" + "9" * 64
    with session_scope(fleet.engine) as s:
        queries.add_device(s, name="e", link_rate_bps=64_000)
    fleet.report("e", "reg.io/app:1", "reg.io/web:1")
    third = fleet.deploy(("e",))
    rebuilt = fleet.builder.built[2:]
    assert [i2d.device_target_name(s.target) for s in rebuilt] == ["reg.io/app:2"]
    assert rebuilt[0].release is not None and rebuilt[0].release.version == 6
    assert len(third.reused) == 1  # web:2 is still current: reused
    assert _versions(fleet)["reg.io/app:2"] == (6, fleet.image_id("reg.io/app:2"))


def test_a_bundle_near_its_expiry_is_rebuilt(fleet: Fleet) -> None:  # noqa: F811
    fleet.deploy(("a",), release_ttl=10 * DAY)
    with session_scope(fleet.engine) as s:
        queries.add_device(s, name="e", link_rate_bps=64_000)
    fleet.report("e", "reg.io/app:1", "reg.io/web:1")
    # with a 30-day validity, a bundle with 10 days left has less than half: rebuilt
    third = fleet.deploy(("e",), release_ttl=30 * DAY)
    assert third.reused == () and len(fleet.builder.built) == 4


def test_release_is_current_rules() -> None:
    now, ttl = 1_000_000.0, 100.0
    rel = BundleRelease(bundle_key="k", target_name="app:2", version=3,
                        expires_at=int(now + ttl))
    last_same = BundleVersion(target_name="app:2", last_version=7, last_image_id="sha256:a")
    last_other = BundleVersion(target_name="app:2", last_version=7, last_image_id="sha256:b")
    assert i2d.release_is_current(rel, "sha256:a", None, now, ttl)
    assert i2d.release_is_current(rel, "sha256:a", last_same, now, ttl)
    assert not i2d.release_is_current(rel, "sha256:a", last_other, now, ttl)
    assert not i2d.release_is_current(None, "sha256:a", None, now, ttl)
    assert not i2d.release_is_current(rel, "sha256:a", None, now + ttl * 0.6, ttl)
