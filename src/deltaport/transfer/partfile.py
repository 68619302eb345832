"""The ``.part`` file a download grows in, and its atomic commit to the destination.

Writes go straight to the file descriptor (``os.pwrite``, no user-space buffer), so
a SIGKILL loses at most the piece being written; whatever is on disk is judged by
re-verification on the next start, never trusted. An exclusive ``flock`` keeps two
downloaders of the same file apart; the kernel drops it when a process dies.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from deltaport.errors import StorageError
from deltaport.fsutil import fsync_dir
from deltaport.transfer.plan import ChunkPlan, chunk_ok


def part_path(dest: Path) -> Path:
    """Where the download of ``dest`` grows: ``dest`` + ``.part``, same directory."""
    return dest.with_suffix(dest.suffix + ".part")


class PartFile:
    """An open, locked ``.part`` file. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open {path}: {exc}") from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StorageError(f"{path} is being downloaded by another process") from exc
            raise StorageError(f"cannot lock {path}: {exc}") from exc
        self._open = True

    def __enter__(self) -> PartFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock and the descriptor (idempotent)."""
        if self._open:
            self._open = False
            os.close(self._fd)

    def size(self) -> int:
        """Current length in bytes."""
        return os.fstat(self._fd).st_size

    def pread(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at end of file)."""
        parts: list[bytes] = []
        while length > 0:
            data = os.pread(self._fd, length, offset)
            if not data:
                break
            parts.append(data)
            offset += len(data)
            length -= len(data)
        return b"".join(parts)

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write all of ``data`` at ``offset``.

        Raises:
            StorageError: the disk is full or the file unwritable.
        """
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self._fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as exc:
            raise StorageError(f"cannot write {self.path}: {exc}") from exc

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes."""
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            raise StorageError(f"cannot truncate {self.path}: {exc}") from exc

    def verify_chunks(self, plan: ChunkPlan) -> list[bool]:
        """Which chunks of ``plan`` are already on disk intact (reads each one)."""
        return [chunk_ok(plan, i, self.pread(plan.start(i), plan.end(i) - plan.start(i)))
                for i in range(plan.count)]

    def commit(self, dest: Path) -> None:
        """fsync, then atomically rename to ``dest`` and fsync the directory.

        Raises:
            StorageError: the data could not be made durable or renamed.
        """
        try:
            os.fsync(self._fd)
            os.replace(self.path, dest)
            fsync_dir(dest.parent)
        except OSError as exc:
            raise StorageError(f"cannot move {self.path} to {dest}: {exc}") from exc
