"""Issue 11 item 8: an inbox file is judged by how long the agent has seen it unchanged
(its own monotonic clock, per name and inode), never by its mtime — a real
``rsync -a --partial`` cut mid-transfer leaves a file dated 1970 that must wait."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from deltaport.agent import Agent
from tests.agent.conftest import World, agent_config, image_id_in
from tests.agent.test_inbox import ManualClock
from tests.fixtures.services import Registry

CUT_AT = 0.35  # share of the bundle rsync has written when it is cut
RSYNC_RATE_KBPS = 300  # --bwlimit: the 1.5 MB bundle takes ~5 s, so the cut lands mid-way


def _stat(path: Path) -> os.stat_result:
    return path.stat()


def test_sightings_count_from_first_seen_and_reset_on_change(tmp_path: Path) -> None:
    from deltaport.agent.inbox import Sightings  # new: the old agent judged by mtime

    f = tmp_path / "b.bundle"
    f.write_bytes(b"x" * 10)
    os.utime(f, (0, 0))  # 1970: no bearing on quiet time
    seen = Sightings()
    assert seen.quiet_for("b.bundle", _stat(f), 100.0) == 0.0
    assert seen.quiet_for("b.bundle", _stat(f), 160.0) == 60.0
    with f.open("ab") as out:
        out.write(b"y")  # it grew: quiet again from now
    os.utime(f, (0, 0))
    assert seen.quiet_for("b.bundle", _stat(f), 170.0) == 0.0
    assert seen.quiet_for("b.bundle", _stat(f), 175.0) == 5.0
    other = tmp_path / "other"
    other.write_bytes(b"x" * 11)  # same name, size and mtime, another file (inode)
    os.utime(other, (0, 0))
    os.replace(other, f)
    assert seen.quiet_for("b.bundle", _stat(f), 180.0) == 0.0
    seen.keep_only(set())
    assert seen.quiet_for("b.bundle", _stat(f), 500.0) == 0.0  # forgotten: first seen again


def test_partial_dated_1970_waits_and_growing_resets_the_wait(
        tmp_path: Path, world: World, device_registry: Registry) -> None:
    config = agent_config(tmp_path, world, device_registry.host, inbox_stale_seconds=600.0)
    config.inbox.mkdir(parents=True)
    data = world.small.path.read_bytes()
    part = config.inbox / "v2.bundle"
    part.write_bytes(data[:1000])
    os.utime(part, (0, 0))
    clock = ManualClock()
    with Agent(config, clock=clock) as agent:
        assert agent.run_once().inbox_waiting == 1
        clock.advance(599)
        assert agent.run_once().inbox_waiting == 1
        with part.open("ab") as out:
            out.write(data[1000:2000])
        os.utime(part, (0, 0))
        clock.advance(300)  # 899 s after first seen; this pass sees it grew
        assert agent.run_once().inbox_waiting == 1
        clock.advance(599)
        assert agent.run_once().inbox_waiting == 1
        clock.advance(1)
        report = agent.run_once()
        assert report.inbox_failed == 1 and "unchanged for 600s" in report.failures[0]
    assert (config.inbox / "failed" / "v2.bundle").stat().st_size == 2000


def _rsync(*args: str) -> list[str]:
    # --no-whole-file: a local copy otherwise skips the delta algorithm a remote link uses
    return ["rsync", "-a", "--partial", "--no-whole-file", *args]


def _cut_rsync_midway(src: Path, dest_dir: Path, size: int) -> None:
    """Start a throttled rsync and cut it (SIGTERM, as a dropped link does) mid-file."""
    proc = subprocess.Popen(_rsync(f"--bwlimit={RSYNC_RATE_KBPS}", str(src), f"{dest_dir}/"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            temps = [p for p in dest_dir.iterdir() if p.name.startswith(f".{src.name}.")]
            if temps and temps[0].stat().st_size >= CUT_AT * size:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "rsync finished before it could be cut"
        proc.send_signal(signal.SIGTERM)
    finally:
        proc.wait(timeout=30)


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed "
                    "(scripts/setup.sh installs it)")
def test_rsync_partial_cut_midway_is_kept_and_resumed_not_resent(
        tmp_path: Path, world: World, device_registry: Registry) -> None:
    config = agent_config(tmp_path, world, device_registry.host)  # default: stale after 7 days
    config.inbox.mkdir(parents=True)
    src = tmp_path / "outbox" / "big.bundle"
    src.parent.mkdir()
    shutil.copyfile(world.big.path, src)
    size = world.big.size
    _cut_rsync_midway(src, config.inbox, size)
    partial = config.inbox / "big.bundle"
    kept = partial.stat()
    assert CUT_AT * size <= kept.st_size < size
    assert kept.st_mtime < 86_400  # rsync dates the partial file 1970-01-01
    clock = ManualClock()
    with Agent(config, clock=clock) as agent:
        report = agent.run_once()
        assert report.inbox_waiting == 1 and report.inbox_failed == 0
        clock.advance(3600)  # an hour of link outage: still waiting
        assert agent.run_once().inbox_waiting == 1
        assert partial.stat().st_size == kept.st_size
        resumed = subprocess.run(_rsync("--stats", str(src), f"{config.inbox}/"),
                                 capture_output=True, text=True, timeout=120, check=True)
        literal = int(re.search(r"Literal data: ([\d,]+)", resumed.stdout)
                      .group(1).replace(",", ""))  # type: ignore[union-attr]
        print(f"rsync re-sent {literal} literal bytes of {size} ({kept.st_size} kept)")
        assert literal <= size - kept.st_size + size // 20  # only what was missing (+5%)
        report = agent.run_once()
        assert report.inbox_done == 1 and report.reconstructed == 1
    assert image_id_in(device_registry, world.big.target) == world.big.image_id
