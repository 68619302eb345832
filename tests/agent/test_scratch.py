"""Scratch left by a killed agent is removed when the next one starts (issue 11 item 9)."""

from __future__ import annotations

import os
from pathlib import Path

from deltaport.agent import Agent
from tests.agent.conftest import World, agent_config
from tests.fixtures.services import Registry


def test_start_removes_what_a_killed_agent_left_in_scratch(
    tmp_path: Path, world: World, empty_registry: Registry
) -> None:
    config = agent_config(tmp_path, world, empty_registry.host)
    scratch = config.state_dir / "scratch"
    (scratch / "apply-1" / "deep").mkdir(parents=True)
    (scratch / "apply-1" / "deep" / "layer.part").write_bytes(b"x" * 4096)
    (scratch / "engine-load.tar").write_bytes(b"y" * 4096)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    os.symlink(outside, scratch / "link")
    kept = config.state_dir / "downloads" / "sha256-abc" / "bundle.part"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"resumable download")
    with Agent(config):
        assert list(scratch.iterdir()) == []
    assert outside.read_text() == "keep me"  # a symlink in scratch is removed, not followed
    assert kept.read_bytes() == b"resumable download"  # downloads resume: never scratch
