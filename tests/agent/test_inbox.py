"""Inbox mode against a real device registry, with bundles built by create_image_delta."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from deltaport.agent import Agent
from tests.agent.conftest import DEVICE, World, agent_config, image_id_in
from tests.fixtures.services import Registry

WRITER = """
import sys, time
src, dest = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
with open(dest, "wb", buffering=0) as out:
    for i in range(len(data)):
        out.write(data[i:i + 1])
        if i % 64 == 0:
            time.sleep(0.01)
"""


class ManualClock:
    """A monotonic clock the test moves: the agent judges quiet time by it, not mtime."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _arrivals(inbox: Path) -> list[str]:
    """The inbox's entries besides the agent's own done/ and failed/."""
    return [name for name in _files(inbox) if name not in ("done", "failed")]


def test_bundle_written_byte_by_byte_is_taken_only_when_complete(
        tmp_path: Path, world: World, device_registry: Registry) -> None:
    config = agent_config(tmp_path, world, device_registry.host)
    dest = config.inbox / "v2.bundle"
    config.inbox.mkdir(parents=True)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(world.small.path), str(dest)])
    passes_while_writing = 0
    with Agent(config) as agent:
        try:
            while True:
                report = agent.run_once()
                if writer.poll() is not None:
                    break  # the writer may have finished during this pass
                passes_while_writing += 1
                assert report.inbox_done == report.inbox_failed == report.failed == 0
                assert report.inbox_waiting == 1 or not dest.exists()
                assert _arrivals(config.inbox) in (["v2.bundle"], [])
                assert image_id_in(device_registry, world.small.target) is None
        finally:
            writer.wait(timeout=30)
        assert writer.returncode == 0
        agent.run_once()
        assert passes_while_writing >= 3
        assert _files(config.inbox / "done") == ["v2.bundle"]
        assert _files(config.inbox / "failed") == []
        assert image_id_in(device_registry, world.small.target) == world.small.image_id
        pending = agent.state.pending_messages(10)
    assert [(m["status"], m["image_id"], m["deployment"], m["device"]) for m in pending] == [
        ("present", world.small.image_id, "dep-1", DEVICE)]
    assert pending[0]["reconstruct_seconds"] >= 0  # extra fields ride along


def test_truncated_bundle_waits_then_fails_once_stale(
        tmp_path: Path, world: World, device_registry: Registry) -> None:
    config = agent_config(tmp_path, world, device_registry.host, inbox_stale_seconds=3600.0)
    config.inbox.mkdir(parents=True)
    data = world.small.path.read_bytes()
    half = config.inbox / "half.bundle"
    half.write_bytes(data[: len(data) // 2])
    os.utime(half, (0, 0))  # dated 1970: says nothing about how long it has been quiet
    clock = ManualClock()
    with Agent(config, clock=clock) as agent:
        report = agent.run_once()  # first seen now
        assert report.inbox_waiting == 1 and report.inbox_failed == 0
        clock.advance(3000)  # quiet for a while, but not stale yet: still waiting
        report = agent.run_once()
        assert report.inbox_waiting == 1 and report.inbox_failed == 0
        assert _arrivals(config.inbox) == ["half.bundle"]
        clock.advance(700)
        report = agent.run_once()
        assert report.inbox_failed == 1
        assert _files(config.inbox / "failed") == ["half.bundle", "half.bundle.reason"]
        reason = (config.inbox / "failed" / "half.bundle.reason").read_text()
        assert "truncated" in reason and f"of {len(data)}" in reason
        assert agent.state.pending_messages(10) == []  # nothing trustworthy to report
    assert image_id_in(device_registry, world.small.target) is None


def test_untrusted_signature_is_refused_after_settling(
        tmp_path: Path, world: World, device_registry: Registry) -> None:
    config = agent_config(tmp_path, world, device_registry.host)
    config.inbox.mkdir(parents=True)
    bad = config.inbox / "evil.bundle"
    bad.write_bytes(world.small_untrusted.path.read_bytes())
    os.utime(bad, (0, 0))
    clock = ManualClock()
    with Agent(config, clock=clock) as agent:
        report = agent.run_once()  # first seen: may be a tool still filling it in place
        assert report.inbox_waiting == 1 and _arrivals(config.inbox) == ["evil.bundle"]
        clock.advance(61)
        report = agent.run_once()
        assert report.inbox_failed == 1
        reason = (config.inbox / "failed" / "evil.bundle.reason").read_text()
        assert "SignatureError" in reason and "trusted" in reason
        assert agent.state.pending_messages(10) == []
    assert image_id_in(device_registry, world.small.target) is None


def test_bundle_for_another_device_is_refused(
        tmp_path: Path, world: World, device_registry: Registry) -> None:
    config = agent_config(tmp_path, world, device_registry.host)
    config.inbox.mkdir(parents=True)
    (config.inbox / "other.bundle").write_bytes(world.small_other.path.read_bytes())
    with Agent(config) as agent:
        report = agent.run_once()  # complete and correctly signed: judged at once
        assert report.inbox_failed == 1
        reason = (config.inbox / "failed" / "other.bundle.reason").read_text()
        assert "dev-2" in reason and f"not for device '{DEVICE}'" in reason
        assert agent.state.pending_messages(10) == []  # misrouted: not ours to report
    assert image_id_in(device_registry, world.small.target) is None


def test_missing_source_image_fails_with_the_diff_ids(
        tmp_path: Path, world: World, empty_registry: Registry) -> None:
    config = agent_config(tmp_path, world, empty_registry.host)
    config.inbox.mkdir(parents=True)
    (config.inbox / "v2.bundle").write_bytes(world.small.path.read_bytes())
    with Agent(config) as agent:
        report = agent.run_once()
        assert report.inbox_failed == 1
        reason = (config.inbox / "failed" / "v2.bundle.reason").read_text()
        messages = agent.state.pending_messages(10)
    assert "missing source layers" in reason
    needed = [d for d in world.v1_diff_ids if d in reason]
    assert needed, reason  # the reason lists the diff_ids the device lacks
    assert [(m["status"], m["image_id"]) for m in messages] == [("failed", world.small.image_id)]
    assert all(d in messages[0]["reason"] for d in needed)
    assert image_id_in(empty_registry, world.small.target) is None


def test_cli_once_and_status(tmp_path: Path, world: World, device_registry: Registry) -> None:
    config = agent_config(tmp_path, world, device_registry.host)
    config.inbox.mkdir(parents=True)
    (config.inbox / "v2.bundle").write_bytes(world.small.path.read_bytes())
    toml = tmp_path / "agent.toml"
    toml.write_text(
        f'device = "{DEVICE}"\ntrusted_keys = ["{world.trusted_pub}"]\n'
        f'inbox = "{config.inbox}"\nstate_dir = "{config.state_dir}"\n'
        f'registry = "docker://{device_registry.host}"\n')
    cli = [sys.executable, "-m", "deltaport.cli.main", "agent"]
    run = subprocess.run([*cli, "run", "--once", "--config", str(toml)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert image_id_in(device_registry, world.small.target) == world.small.image_id
    status = subprocess.run([*cli, "status", "--json", "--config", str(toml)],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["outbox"]["pending"] == 1 and doc["outbox"]["inventory_pending"] is True
    assert doc["outbox"]["rejected"] == 0 and doc["rejected"] == []
