"""Issue 11 item 10: a bundle deferred for want of disk is reported to the hub once per
cause, not once per pass; a full disk under the device registry is its own cause.

Real small file systems: the agent's state folder (where reconstruction scratch lives)
and the device registry's storage are each on a tmpfs mount of their own, filled with
real files."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deltaport.agent import Agent
from deltaport.agent.reconstruct import DeferralCause, NotEnoughDiskError, deferral_cause
from deltaport.errors import RegistryError, StorageError, TransferError
from deltaport.oci import copy_image
from tests.agent.conftest import OPTS, World, agent_config, image_id_in
from tests.fixtures.services import run_registry

MIB = 1024 * 1024
STATE_FS_MIB = 64
MIN_FREE = 48 * MIB  # the agent keeps this free: a 20+ MiB filler leaves too little
PASSES = 5


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Any]:
    """Mount tmpfs file systems of a given size in MiB (unmounted at the end)."""
    mounted: list[Path] = []

    def mount(name: str, mib: int) -> Path:
        where = tmp_path / name
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(path: Path, mib: int) -> None:
    with path.open("ab") as out:
        out.write(os.urandom(mib * MIB))


def _fill_up(path: Path) -> None:
    """Write until the file system says it is full."""
    block = os.urandom(MIB)
    with path.open("ab", buffering=0) as out:
        try:
            while True:
                out.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def _deferrals(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["status"] == "failed" and m["reason"].startswith("deferred")]


def test_one_message_per_cause_over_many_passes(tmp_path: Path, world: World,
                                                small_fs: Any) -> None:
    state_fs = small_fs("state-fs", STATE_FS_MIB)
    registry_fs = small_fs("registry-fs", 32)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "v2.bundle").write_bytes(world.small.path.read_bytes())
    with run_registry(registry_fs / "reg") as registry:
        copy_image(world.cloud.ref("demo/app:v1"), registry.ref("demo/app:v1"), options=OPTS)
        config = agent_config(tmp_path, world, registry.host, state_dir=state_fs / "state",
                              min_free_bytes=MIN_FREE)
        state_filler = state_fs / "filler"
        _fill(state_filler, 20)
        with Agent(config) as agent:
            for _ in range(PASSES):  # the disk fills further each pass: new byte counts
                assert agent.run_once().deferred == 1
                _fill(state_filler, 1)
            disk_full = _deferrals(agent.state.pending_messages(100))
            print(f"{len(disk_full)} deferral message(s) over {PASSES} passes, device disk full")
            assert len(disk_full) == 1
            assert disk_full[0]["deferral_cause"] == "disk_full"
            assert "not enough free disk on the device" in disk_full[0]["reason"]

            state_filler.unlink()  # room for scratch; now the registry's own disk is full
            _fill_up(registry_fs / "filler")
            for _ in range(3):
                assert agent.run_once().deferred == 1
            deferrals = _deferrals(agent.state.pending_messages(100))
            print(f"{len(deferrals) - 1} more over 3 passes, registry disk full")
            assert len(deferrals) == 2  # the cause changed: said once more
            assert deferrals[1]["deferral_cause"] == "registry_disk_full"
            assert "the device registry's disk is full" in deferrals[1]["reason"]
            assert "no space left on device" in deferrals[1]["reason"]

            (registry_fs / "filler").unlink()
            report = agent.run_once()
            assert report.reconstructed == 1 and report.inbox_done == 1
            statuses = [m["status"] for m in agent.state.pending_messages(100)]
        assert statuses == ["failed", "failed", "present"]
        assert image_id_in(registry, world.small.target) == world.small.image_id


@pytest.mark.parametrize(("error", "cause"), [
    (NotEnoughDiskError("not enough free disk in /x: 1 bytes free, 2 needed"),
     DeferralCause.DISK_FULL),
    (RegistryError("registry r (upload) answered 500 UNKNOWN: unknown error: write /v: "
                   "no space left on device", 500), DeferralCause.REGISTRY_DISK_FULL),
    (RegistryError("registry r answered 507 HTTP 507", 507), DeferralCause.REGISTRY_DISK_FULL),
    (RegistryError("registry r answered 500 UNKNOWN: internal failure", 500),
     DeferralCause.REGISTRY_UNREACHABLE),
    (TransferError("cannot reach registry r"), DeferralCause.REGISTRY_UNREACHABLE),
    (StorageError("cannot write /x: read-only file system"), DeferralCause.STORAGE),
])
def test_deferral_cause_is_stable_whatever_the_byte_counts(error: Exception,
                                                           cause: DeferralCause) -> None:
    assert deferral_cause(error) is cause  # type: ignore[arg-type]


def test_disk_full_while_writing_is_the_disk_full_cause() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise StorageError("cannot write /scratch/layer: No space left on device") from exc
    except StorageError as wrapped:
        assert deferral_cause(wrapped) is DeferralCause.DISK_FULL
