"""The agent against a hub double (docs/hub-api.md) over a bad link (tests/fixtures/proxy.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from deltaport.agent import Agent
from deltaport.agent.runtime.model import RuntimeKind, RuntimeSettings
from deltaport.bundle import load_private_key
from deltaport.desired import DesiredModule, DesiredState, ManifestKind, encode_envelope
from tests.agent.conftest import DEVICE, World, agent_config
from tests.agent.hubdouble import HubDouble
from tests.fixtures.proxy import TcpProxy
from tests.fixtures.services import Registry

KiB = 1024


@pytest.fixture
def hub() -> Iterator[HubDouble]:
    with HubDouble(tokens={"tok-1": DEVICE, "tok-2": "dev-2"}) as server:
        yield server


def skopeo_image_id(registry: Registry, name: str) -> str:
    """The image ID as skopeo, an independent client, sees it: sha256 of the raw config."""
    raw = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", "--config",
         f"docker://{registry.host}/{name}"], capture_output=True, check=True, timeout=60)
    return "sha256:" + hashlib.sha256(raw.stdout).hexdigest()


def test_download_through_a_link_cut_every_64k(
        tmp_path: Path, world: World, device_registry: Registry, hub: HubDouble) -> None:
    big = world.big
    hub.add_bundle(DEVICE, big.path, image_id=big.image_id, target=big.target,
                   deployment="dep-3")
    desired = DesiredState(
        device=DEVICE, version=1, deployment="dep-3", issued_at="2026-12-02T00:00:00Z",
        kind=ManifestKind.COMPOSE,
        modules=(DesiredModule("app", f"{device_registry.host}/{big.target}", big.image_id),),
        manifest={"services": {"app": {"image": f"{device_registry.host}/{big.target}"}}})
    hub.desired[DEVICE] = encode_envelope(desired, [load_private_key(world.manifest_key)])
    runtime = RuntimeSettings(kind=RuntimeKind.FILE, manifest_keys=(world.manifest_pub,),
                              desired_file=tmp_path / "desired.json")
    with TcpProxy(("127.0.0.1", hub.port), rate=4_000_000, cut_after=64 * KiB) as link:
        config = agent_config(tmp_path, world, device_registry.host, hub_url=link.url,
                              runtime=runtime)
        with Agent(config) as agent:
            report = agent.run_once()
            assert report.hub_error is None
            assert (report.downloaded, report.reconstructed, report.failed) == (1, 1, 0)
            assert link.cuts >= big.size // (64 * KiB)  # the link really was cut, often
            assert link.bytes_down <= big.size + 32 * KiB, (link.bytes_down, big.size)
            agent.run_once()  # nothing more to do: the hub retired the bundle
            assert link.bytes_down <= big.size + 32 * KiB
    assert skopeo_image_id(device_registry, big.target) == big.image_id
    statuses = hub.statuses(big.image_id)
    assert [(s["status"], s["device"], s["deployment"]) for s in statuses] == [
        ("present", DEVICE, "dep-3")]
    assert statuses[0]["bytes"]["bundle"] == big.size
    assert 0 < statuses[0]["bytes"]["downloaded"] <= 1.05 * big.size
    names = {(i["name"], i["image_id"]) for i in hub.checkins[-1][1]["images"]}
    assert (big.target, big.image_id) in names and ("demo/app:v1", world.v1_image_id) in names
    written = json.loads((tmp_path / "desired.json").read_bytes())  # verified, then written
    assert (written["deployment"], written["version"]) == ("dep-3", 1)
    assert written["images"] == [{"module": "app", "image_id": big.image_id,
                                  "reference": f"{device_registry.host}/{big.target}"}]
    assert ("GET", "/api/v1/device/desired-manifest", 304) in hub.requests  # ETag honoured


def test_priority_order_and_a_misrouted_offer(
        tmp_path: Path, world: World, device_registry: Registry, hub: HubDouble) -> None:
    other = hub.add_bundle(DEVICE, world.small_other.path, image_id=world.small_other.image_id,
                           target=world.small_other.target, deployment="dep-x", priority=2)
    small = hub.add_bundle(DEVICE, world.small.path, image_id=world.small.image_id,
                           target=world.small.target, deployment="dep-1", priority=1)
    big = hub.add_bundle(DEVICE, world.big.path, image_id=world.big.image_id,
                         target=world.big.target, deployment="dep-3", priority=0)
    config = agent_config(tmp_path, world, device_registry.host, hub_url=hub.url)
    with Agent(config) as agent:
        report = agent.run_once()
    assert (report.reconstructed, report.failed) == (2, 1)
    gets = [p for m, p, _ in hub.requests if m == "GET" and "/bundles/" in p]
    first = {p: gets.index(p) for p in reversed(gets)}
    assert first[f"/api/v1/device/bundles/{big.digest}"] < \
        first[f"/api/v1/device/bundles/{small.digest}"]
    refused = [s for s in hub.statuses() if s["status"] == "failed"]
    assert len(refused) == 1 and "not for device 'dev-1'" in refused[0]["reason"]
    assert gets.count(f"/api/v1/device/bundles/{other.digest}") == 1  # its head, no payload


def test_outbox_survives_an_outage_and_a_restart_and_arrives_once(
        tmp_path: Path, world: World, device_registry: Registry, hub: HubDouble) -> None:
    with TcpProxy(("127.0.0.1", hub.port)) as link:
        config = agent_config(tmp_path, world, device_registry.host, hub_url=link.url)
        config.inbox.mkdir(parents=True)
        (config.inbox / "v2.bundle").write_bytes(world.small.path.read_bytes())
        link.set_outage(True)
        with Agent(config) as agent:
            for _ in range(2):
                report = agent.run_once()
                assert report.hub_error is not None
            assert report.inbox_done == 0 and agent.state.counts().messages_pending == 1
        assert hub.messages == {}
        link.set_outage(False)
        hub.drop_status_answers = 1  # the hub stores the batch, the answer is lost
        with Agent(config) as agent:  # a restart
            assert agent.state.counts().messages_pending == 1
            message_id = agent.state.pending_messages(1)[0]["message_id"]
            report = agent.run_once()
            assert report.hub_error is not None  # the lost answer
            assert agent.state.counts().messages_pending == 1
            report = agent.run_once()
            assert report.hub_error is None and report.delivered == 1
            agent.run_once()
            assert agent.state.counts().messages_pending == 0
    posts_with_it = [ids for ids in hub.status_posts if message_id in ids]
    assert len(posts_with_it) == 2  # delivered at least once...
    assert list(hub.messages) == [message_id]  # ...and stored exactly once
    assert hub.messages[message_id]["status"] == "present"
    names = {i["name"] for i in hub.checkins[-1][1]["images"]}
    assert world.small.target in names


def test_bad_token_is_logged_not_fatal(
        tmp_path: Path, world: World, device_registry: Registry, hub: HubDouble) -> None:
    config = agent_config(tmp_path, world, device_registry.host, hub_url=hub.url, token="nope")
    with Agent(config) as agent:
        report = agent.run_once()
        assert report.hub_error is not None and "refused" in report.hub_error
        assert agent.state.counts().inventory_pending


def test_a_refused_bundle_does_not_block_the_others(
        tmp_path: Path, world: World, device_registry: Registry, hub: HubDouble) -> None:
    theirs = hub.add_bundle("dev-2", world.big.path, image_id=world.big.image_id,
                            target=world.big.target, deployment="dep-3")
    hub.bundles[DEVICE] = [theirs]  # listed for dev-1 by mistake; the file answers 403
    hub.add_bundle(DEVICE, world.small.path, image_id=world.small.image_id,
                   target=world.small.target, deployment="dep-1", priority=1)
    config = agent_config(tmp_path, world, device_registry.host, hub_url=hub.url)
    with Agent(config) as agent:
        report = agent.run_once()
        assert report.hub_error is not None and "403" in report.hub_error
        assert (report.reconstructed, report.failed) == (1, 0)
        assert agent.state.outcome(f"hub:{theirs.digest}:dep-3") is None  # not failed: skipped
    assert [s["image_id"] for s in hub.statuses()] == [world.small.image_id]


def test_a_message_the_hub_rejects_is_kept_and_not_sent_again(
        tmp_path: Path, world: World, device_registry: Registry, hub: HubDouble) -> None:
    hub.add_bundle(DEVICE, world.small.path, image_id=world.small.image_id,
                   target=world.small.target, deployment="dep-1")
    hub.unknown_deployments.add("dep-1")  # e.g. deleted on the hub meanwhile
    config = agent_config(tmp_path, world, device_registry.host, hub_url=hub.url)
    with Agent(config) as agent:
        report = agent.run_once()
        assert report.hub_error is None and report.reconstructed == 1
        assert (report.delivered, report.rejected) == (0, 1)
        counts = agent.state.counts()
        assert (counts.messages_pending, counts.messages_rejected) == (0, 1)
        [kept] = agent.state.rejected_messages(10)
        assert kept.error == "unknown deployment 'dep-1'"
        assert kept.message["status"] == "present" and kept.message["deployment"] == "dep-1"
        posts = len(hub.status_posts)
        for _ in range(2):
            report = agent.run_once()
            assert report.hub_error is None and report.rejected == 0
    assert hub.messages == {}  # the hub stored nothing of it...
    assert len(hub.status_posts) == posts  # ...and it was not sent again
    assert [ids for ids in hub.status_posts if kept.message_id in ids] == [[kept.message_id]]
    with Agent(config) as agent:  # a restart keeps it, still rejected
        assert agent.state.counts().messages_rejected == 1
        assert agent.state.pending_messages(10) == []
