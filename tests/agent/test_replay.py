"""Replay protection (issue 11, item 2): an old, validly signed bundle must not roll a
device back, through the inbox or a hub offer; an expired bundle is refused; an
operator rollback (the old image in a NEW bundle with a higher version) is taken.

Real device registry, bundles built by the real ``create_image_delta`` for one name,
``demo/replay:stable``, pointing at v2, then v3, then v2 again in the cloud registry.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from deltaport.agent import Agent
from deltaport.bundle import Release, load_private_key
from deltaport.delta.image import create_image_delta, target_name
from deltaport.oci import copy_image
from tests.agent.conftest import DEVICE, OPTS, World, agent_config, image_id_in
from tests.agent.hubdouble import HubDouble
from tests.fixtures.services import Registry

NAME = "demo/replay:stable"
DAY = 86_400


@dataclass(frozen=True)
class Releases:
    v2_r1: Path  # demo/replay:stable = v2, release 1
    v3_r2: Path  # demo/replay:stable = v3, release 2
    v2_r3: Path  # the operator redeploys v2: release 3
    v3_expired: Path  # release 4, expired three days ago
    v2_unversioned: Path  # no release at all (a format-2 style bundle)
    v2_id: str
    v3_id: str
    target: str  # what the device stores NAME as: the cloud registry stays in the path


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory, world: World) -> Releases:
    root = tmp_path_factory.mktemp("replay")
    key = load_private_key(world.trusted_pub.with_name("deltaport.key"))
    cloud = world.cloud
    far = int(time.time()) + 90 * DAY

    def build(tag: str, name: str, release: Release | None) -> tuple[Path, str]:
        copy_image(cloud.ref(f"demo/app:{tag}"), cloud.ref(NAME), options=OPTS)
        out = root / name
        summary = create_image_delta(cloud.ref(NAME), [cloud.ref("demo/app:v1")], out,
                                     signing_key=key, options=OPTS, release=release,
                                     extra_content={"devices": [DEVICE]})
        return out, summary.image_id

    r1, v2_id = build("v2", "r1.bundle", Release(1, far))
    r2, v3_id = build("v3", "r2.bundle", Release(2, far))
    r3, _ = build("v2", "r3.bundle", Release(3, far))
    expired, _ = build("v3", "expired.bundle", Release(4, int(time.time()) - 3 * DAY))
    legacy, _ = build("v2", "legacy.bundle", None)
    return Releases(r1, r2, r3, expired, legacy, v2_id, v3_id, target_name(cloud.ref(NAME)))


def _drop(config_inbox: Path, bundle: Path, name: str) -> None:
    config_inbox.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle, config_inbox / name)


def _reason(inbox: Path, name: str) -> str:
    return (inbox / "failed" / f"{name}.reason").read_text()


def test_inbox_replay_is_refused_and_an_operator_rollback_is_taken(
        tmp_path: Path, world: World, device_registry: Registry, releases: Releases) -> None:
    config = agent_config(tmp_path, world, device_registry.host, inbox_settle_seconds=0.0)
    with Agent(config) as agent:
        _drop(config.inbox, releases.v2_r1, "r1.bundle")
        agent.run_once()
        assert image_id_in(device_registry, releases.target) == releases.v2_id
        _drop(config.inbox, releases.v3_r2, "r2.bundle")
        agent.run_once()
        assert image_id_in(device_registry, releases.target) == releases.v3_id

        _drop(config.inbox, releases.v2_r1, "replayed.bundle")
        report = agent.run_once()
        assert report.reconstructed == 0 and report.inbox_failed == 1
        assert "replay refused" in _reason(config.inbox, "replayed.bundle")
        assert "release 1" in _reason(config.inbox, "replayed.bundle")
        assert image_id_in(device_registry, releases.target) == releases.v3_id

        _drop(config.inbox, releases.v2_unversioned, "legacy.bundle")
        report = agent.run_once()
        assert report.inbox_failed == 1
        assert "no signed release" in _reason(config.inbox, "legacy.bundle")
        assert image_id_in(device_registry, releases.target) == releases.v3_id

        _drop(config.inbox, releases.v2_r3, "rollback.bundle")
        report = agent.run_once()
        assert report.reconstructed == 1 and report.inbox_done == 1
        assert image_id_in(device_registry, releases.target) == releases.v2_id
        held = agent.state.releases(releases.target)
        assert [h.version for h in held.values()] == [3]


def test_expired_bundle_is_refused(
        tmp_path: Path, world: World, device_registry: Registry, releases: Releases) -> None:
    config = agent_config(tmp_path, world, device_registry.host, inbox_settle_seconds=0.0)
    with Agent(config) as agent:
        _drop(config.inbox, releases.v3_expired, "old.bundle")
        report = agent.run_once()
    assert report.reconstructed == 0 and report.inbox_failed == 1
    assert "expired" in _reason(config.inbox, "old.bundle")
    assert image_id_in(device_registry, releases.target) is None


def test_unversioned_bundle_is_taken_when_no_release_is_held(
        tmp_path: Path, world: World, device_registry: Registry, releases: Releases,
        caplog: pytest.LogCaptureFixture) -> None:
    config = agent_config(tmp_path, world, device_registry.host, inbox_settle_seconds=0.0)
    with Agent(config) as agent:
        _drop(config.inbox, releases.v2_unversioned, "legacy.bundle")
        report = agent.run_once()
    assert report.reconstructed == 1
    assert image_id_in(device_registry, releases.target) == releases.v2_id
    assert "no signed release version" in caplog.text


def test_hub_offer_of_an_old_bundle_is_refused_and_reported(
        tmp_path: Path, world: World, device_registry: Registry, releases: Releases) -> None:
    with HubDouble(tokens={"tok-1": DEVICE}) as hub:
        hub.add_bundle(DEVICE, releases.v3_r2, image_id=releases.v3_id, target=releases.target,
                       deployment="dep-new")
        config = agent_config(tmp_path, world, device_registry.host, hub_url=hub.url)
        with Agent(config) as agent:
            agent.run_once()
            assert image_id_in(device_registry, releases.target) == releases.v3_id
            hub.add_bundle(DEVICE, releases.v2_r1, image_id=releases.v2_id, target=releases.target,
                           deployment="dep-old")
            report = agent.run_once()
            assert report.reconstructed == 0 and report.failed == 1
            assert image_id_in(device_registry, releases.target) == releases.v3_id
            agent.run_once()  # deliver the failure
        failed = [m for m in hub.statuses(releases.v2_id) if m["status"] == "failed"]
    assert len(failed) == 1 and "replay refused" in failed[0]["reason"]
