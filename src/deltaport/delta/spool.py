"""Local-disk helpers of the image-level delta: layer spools and file windows.

The layer engine needs random access into source layers and a seekable patch;
registries give streams (gzip cannot seek) and bundles keep patches inside one
member. ``LayerSpool`` streams each needed source layer once to a private file;
``FileWindow`` is a read-only, seekable view of a byte range of an open file.
Memory stays bounded: only copy buffers are held.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path
from typing import Any, BinaryIO, cast

from deltaport.errors import IntegrityError
from deltaport.oci import ImageSource, Layer

COPY_BUFSIZE = 1 << 20


class LayerSpool:
    """Uncompressed copies of source layers in a private folder, by diff_id."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = directory
        self._paths: dict[str, Path] = {}

    def ensure(self, source: ImageSource, layer: Layer) -> Path:
        """The spooled tar of LAYER (verified against its diff_id while it streams)."""
        path = self._paths.get(layer.diff_id)
        if path is not None:
            return path
        path = self._dir / (layer.diff_id.replace(":", "-") + ".tar")
        tmp = path.with_suffix(".part")
        with source.open_layer(layer) as stream, open(tmp, "wb") as out:
            shutil.copyfileobj(stream, out, COPY_BUFSIZE)
        tmp.replace(path)
        self._paths[layer.diff_id] = path
        return path


class FileWindow(io.RawIOBase):
    """A read-only, seekable window [start, start+size) of an open binary file."""

    def __init__(self, f: BinaryIO, start: int, size: int) -> None:
        super().__init__()
        self._f, self._start, self._size, self._pos = f, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        left = max(0, self._size - self._pos)
        n = left if n is None or n < 0 else min(n, left)
        if n == 0:
            return b""
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        self._pos += len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def window(self, offset: int, size: int) -> FileWindow:
        """A sub-window, relative to this one (clipped to it)."""
        start = min(offset, self._size)
        return FileWindow(self._f, self._start + start, max(0, min(size, self._size - start)))

    def buffered(self) -> BinaryIO:
        """A new buffered stream over this window, at its start (closing it leaves this
        window and the file open)."""
        fresh = FileWindow(self._f, self._start, self._size)
        return cast(BinaryIO, io.BufferedReader(fresh, COPY_BUFSIZE))


def verify_window(window: FileWindow, digest: str, what: str) -> None:
    """Hash the whole window; IntegrityError naming WHAT when it is not DIGEST."""
    h = hashlib.sha256()
    window.seek(0)
    while chunk := window.read(COPY_BUFSIZE):
        h.update(chunk)
    if "sha256:" + h.hexdigest() != digest:
        raise IntegrityError(f"{what} does not match its signed digest")
    window.seek(0)


class WriteOnly:
    """Adapts a layer writer (write/finish) to the BinaryIO the engine writes into."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def write(self, data: bytes) -> int:
        self._writer.write(data)
        return len(data)

    def flush(self) -> None:
        return None
