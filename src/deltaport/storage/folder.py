"""A bundle store in a local folder: the outbox a third-party transfer tool syncs."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from deltaport.errors import StorageError
from deltaport.storage.base import check_key


class FolderStore:
    """Objects are files under ROOT; each is written to a temp file then renamed in place."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put_file(self, key: str, path: Path) -> str:
        """Copy PATH into the store under KEY (atomically)."""
        with _storage_errors(key), path.open("rb") as src:
            self._write(key, lambda dst: shutil.copyfileobj(src, dst, 1 << 20))
        return self.location(key)

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write DATA into the store under KEY (atomically)."""
        with _storage_errors(key):
            self._write(key, lambda dst: dst.write(data))
        return self.location(key)

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as dst:
                fill(dst)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        """True if KEY's file exists."""
        return self._path(key).is_file()

    def open(self, key: str) -> BinaryIO:
        """Open KEY's file for reading."""
        with _storage_errors(key):
            return self._path(key).open("rb")

    def location(self, key: str) -> str:
        """file:// URI of KEY."""
        return self._path(key).resolve().as_uri()

    def delete(self, key: str) -> None:
        """Remove KEY's file if present."""
        with _storage_errors(key):
            self._path(key).unlink(missing_ok=True)


@contextmanager
def _storage_errors(key: str) -> Iterator[None]:
    """Map OSError to StorageError naming the key."""
    try:
        yield
    except FileNotFoundError as exc:
        raise StorageError(f"bundle store has no {key!r}") from exc
    except OSError as exc:
        raise StorageError(f"bundle store cannot access {key!r}: {exc}") from exc
