"""The agent's state folder: one agent per folder (a lock), and a clean scratch at start."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path

from deltaport.errors import StorageError

log = logging.getLogger("deltaport.agent")


def empty_scratch(scratch: Path) -> None:
    """Remove everything in ``scratch`` (not following symlinks); called under the lock.

    Scratch holds only work in progress of a reconstruction or an engine load, which a
    new pass redoes from the start; resumable downloads live in ``downloads/``.
    """
    for entry in os.scandir(scratch):
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StorageError(f"cannot clean scratch folder {scratch}: {exc}") from exc
    log.debug("scratch folder %s emptied", scratch)


def lock_state(path: Path) -> int:
    """Hold an exclusive lock on ``path`` for the agent's lifetime (one agent per state)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"another agent is running on {path.parent}") from exc
    return fd
