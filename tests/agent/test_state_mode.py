"""agent.db (and its WAL files) are owner-only: created 0600, an existing 0644 one tightened."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from deltaport.agent.state import AgentState
from deltaport.errors import StorageError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_state_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent.db"
    old = os.umask(0o022)
    try:
        state = AgentState(path)
        state.put("k", "v")
    finally:
        os.umask(old)
    try:
        assert _mode(path) == 0o600
        for side in ("agent.db-wal", "agent.db-shm"):
            assert _mode(path.with_name(side)) == 0o600
    finally:
        state.close()


def test_existing_world_readable_state_is_made_0600(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    AgentState(path).close()
    path.chmod(0o644)
    AgentState(path).close()
    assert _mode(path) == 0o600


def test_symlinked_state_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.db"
    target.write_bytes(b"")
    target.chmod(0o644)
    (tmp_path / "agent.db").symlink_to(target)
    with pytest.raises(StorageError, match="cannot open agent state"):
        AgentState(tmp_path / "agent.db")
    assert _mode(target) == 0o644


def test_an_in_memory_state_makes_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``:memory:`` is SQLite's database without a file: no file of that name appears."""
    monkeypatch.chdir(tmp_path)
    AgentState(Path(":memory:")).close()
    assert list(tmp_path.iterdir()) == []
