"""Local file helpers shared by every part: atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from deltaport.errors import StorageError


def fsync_dir(directory: Path) -> None:
    """Make a rename in DIRECTORY durable (fsync the directory itself)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write DATA to PATH so readers see the old file or the whole new one, never half.

    A temp file in the same folder is written, fsynced (and chmod-ed to MODE), then
    renamed over PATH; on any failure the temp file is removed.

    Raises:
        StorageError: the folder or file cannot be written (disk full, read-only, ...).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
