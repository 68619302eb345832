"""The tars the builder reads: source layers, scanned once and looked up, and the target.

A source is scanned (members, paths, header stream offsets) once per file and kept in
a bounded, locked cache: an image build passes the same source layers for every one of
its layers, and hub threads build several patches at the same time.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from deltaport.delta.headers import HeaderStream
from deltaport.delta.model import SourceLayer
from deltaport.delta.tarscan import TarEntry, TarLayout, UnsupportedTarError, scan_tar
from deltaport.errors import FormatError

_DIGITS = re.compile(r"\d+")
SCAN_CACHE_MAX = 64  # source layers remembered (an image build passes the same ones per layer)
HASH_CHUNK = 1 << 20  # bytes read at a time while hashing a member


def hash_range(f: BinaryIO, offset: int, length: int) -> bytes:
    """sha256 of LENGTH bytes of F from OFFSET (FormatError if the file ends first)."""
    digest = hashlib.sha256()
    f.seek(offset)
    while length:
        chunk = f.read(min(length, HASH_CHUNK))
        if not chunk:
            raise FormatError("tar ends inside a file")
        digest.update(chunk)
        length -= len(chunk)
    return digest.digest()


def rename_keys(path: str) -> tuple[str, str]:
    """Keys under which a renamed file finds its base: digits masked in the path / basename.

    ``usr/lib/libfoo.so.1.2`` and ``usr/lib/libfoo.so.1.3`` share the first key; a file
    moved to another directory shares the second.
    """
    base = path.rsplit("/", 1)[-1]
    return "p:" + _DIGITS.sub("#", path), "b:" + _DIGITS.sub("#", base)


@dataclass(frozen=True)
class _Scan:
    """What scanning a source tar yields; shared by every build that reads the same file."""

    layout: TarLayout
    files: list[TarEntry]  # regular files, in tar order
    file_index: dict[int, int]  # header_offset -> position in files
    by_path: dict[str, TarEntry]
    entry_index: dict[str, int]  # path -> index of its (last) member, any type
    header_starts: list[int]  # member index -> offset in the source's header stream
    keys: list[tuple[str, str]]  # rename_keys of each file
    hashes: dict[int, bytes] = field(default_factory=dict)  # header_offset -> sha256, lazily


class ScanCache:
    """Scans by (diff_id, path, size, mtime, inode, device), least recently used out."""

    def __init__(self, limit: int = SCAN_CACHE_MAX) -> None:
        self._limit = limit
        self._scans: OrderedDict[tuple[object, ...], _Scan] = OrderedDict()
        self._lock = threading.Lock()

    def scan(self, f: BinaryIO, layer: SourceLayer) -> _Scan | None:
        """The scan of F (the file of LAYER), or None if it is not a tar the scanner models."""
        st = os.fstat(f.fileno())
        key = (layer.diff_id, str(layer.path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
        with self._lock:
            cached = self._scans.get(key)
            if cached is not None:
                self._scans.move_to_end(key)
                return cached
        try:
            layout = scan_tar(f, st.st_size)
        except FormatError:  # UnsupportedTarError included
            return None
        files = layout.regular_files()
        scan = _Scan(
            layout=layout,
            files=files,
            file_index={e.header_offset: i for i, e in enumerate(files)},
            by_path={e.path: e for e in files},
            entry_index={e.path: i for i, e in enumerate(layout.entries)},
            header_starts=HeaderStream(f, layout).starts,
            keys=[rename_keys(e.path) for e in files],
        )
        with self._lock:
            self._scans[key] = scan
            while len(self._scans) > self._limit:
                self._scans.popitem(last=False)
        return scan


SCANS = ScanCache()


@dataclass(frozen=True, eq=False)
class Source:
    """A scanned source layer, open for reading: what file references point into.

    ``index`` is the source's position among the builder's inputs; the patch numbers
    the sources it uses 0..n-1 (``plan.LayerPlan.numbers``).
    """

    index: int
    layer: SourceLayer
    file: BinaryIO
    scan: _Scan

    @property
    def layout(self) -> TarLayout:
        return self.scan.layout

    def read(self, entry: TarEntry, offset: int = 0, length: int | None = None) -> bytes:
        """LENGTH bytes (default: the rest) of ENTRY's content from OFFSET."""
        n = entry.data_len - offset if length is None else length
        self.file.seek(entry.data_offset + offset)
        return self.file.read(n)

    def sha(self, entry: TarEntry) -> bytes:
        """sha256 of ENTRY's content, hashed once per scanned file."""
        cached = self.scan.hashes.get(entry.header_offset)
        if cached is None:
            cached = hash_range(self.file, entry.data_offset, entry.data_len)
            self.scan.hashes[entry.header_offset] = cached
        return cached


def open_sources(layers: Sequence[SourceLayer], cache: ScanCache = SCANS) -> list[Source]:
    """The layers the scanner models, opened (close them with ``close_sources``)."""
    opened: list[Source] = []
    for layer in layers:
        f: BinaryIO = open(layer.path, "rb")  # noqa: SIM115 - closed by close_sources
        scan = cache.scan(f, layer)
        if scan is None:
            f.close()
            continue
        opened.append(Source(len(opened), layer, f, scan))
    return opened


def close_sources(sources: Sequence[Source]) -> None:
    for src in sources:
        src.file.close()


@dataclass(frozen=True)
class FileRef:
    """A source file a target file is rebuilt from."""

    src: Source
    entry: TarEntry
    same_path: bool

    @property
    def position(self) -> int:
        """The file's position among its source's regular files."""
        return self.src.scan.file_index[self.entry.header_offset]


class SourceIndex:
    """Every regular file of every source: by size (for identical content) and by name."""

    def __init__(self, sources: Sequence[Source], rename_match: bool) -> None:
        self.sources = sources
        self.by_size: dict[int, list[tuple[Source, TarEntry]]] = defaultdict(list)
        self.by_key: dict[str, list[tuple[Source, TarEntry]]] = defaultdict(list)
        for src in sources:
            for entry, keys in zip(src.scan.files, src.scan.keys, strict=True):
                if entry.data_len == 0:
                    continue
                self.by_size[entry.data_len].append((src, entry))
                if rename_match:
                    for key in keys:
                        self.by_key[key].append((src, entry))

    def identical(self, path: str, size: int, sha: bytes) -> FileRef | None:
        """A source file with this content: at the same path first, else anywhere."""
        for src in self.sources:
            entry = src.scan.by_path.get(path)
            if entry is not None and entry.data_len == size and src.sha(entry) == sha:
                return FileRef(src, entry, True)
        for src, entry in self.by_size.get(size, ()):
            if src.sha(entry) == sha:
                return FileRef(src, entry, entry.path == path)
        return None

    def similar(self, path: str, size: int) -> FileRef | None:
        """The best delta base: the same path (closest size), else a renamed file."""
        same = [(s, s.scan.by_path[path]) for s in self.sources if path in s.scan.by_path]
        same = [(s, e) for s, e in same if e.data_len > 0]
        if same:
            src, entry = min(same, key=lambda c: abs(c[1].data_len - size))
            return FileRef(src, entry, True)
        for key in rename_keys(path):
            cands = [
                c for c in self.by_key.get(key, ()) if size / 4 <= c[1].data_len <= size * 4
            ]
            if cands:
                src, entry = min(cands, key=lambda c: abs(c[1].data_len - size))
                return FileRef(src, entry, False)
        return None


class Target:
    """The layer tar a patch rebuilds, open for reading; ``layout`` is None if the scanner
    does not model it (the patch then carries it as literal bytes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.size = os.fstat(self.file.fileno()).st_size
        try:
            self.layout: TarLayout | None = scan_tar(self.file, self.size)
        except (UnsupportedTarError, FormatError):
            self.layout = None

    def close(self) -> None:
        self.file.close()

    def read(self, entry: TarEntry, offset: int = 0, length: int | None = None) -> bytes:
        """LENGTH bytes (default: the rest) of ENTRY's content from OFFSET."""
        n = entry.data_len - offset if length is None else length
        return self.read_at(entry.data_offset + offset, n)

    def read_at(self, offset: int, length: int) -> bytes:
        self.file.seek(offset)
        return self.file.read(length)

    def sha(self, entry: TarEntry) -> bytes:
        return hash_range(self.file, entry.data_offset, entry.data_len)
