"""Chunk plans: which bytes to trust, which to fetch. Pure, apart from ``make_plan``.

A plan lists the sha256 of each fixed-size chunk of a region of a remote file
(the last chunk may be shorter). A partly written file is completed desync-style:
re-verify what is on disk against the plan and fetch only what is bad or missing,
with no bookkeeping file that could itself be stale.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deltaport.errors import FormatError, StorageError

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ChunkPlan:
    """The expected content of a region of a remote file, chunk by chunk.

    ``region_offset`` is where the region starts in the remote file; the local
    file holds the region only (``total_size`` bytes).
    """

    total_size: int
    chunk_size: int
    chunk_digests: Sequence[str]
    region_offset: int = 0

    def __post_init__(self) -> None:
        if self.total_size < 0 or self.region_offset < 0:
            raise FormatError("chunk plan: total_size and region_offset must be >= 0")
        if self.chunk_size <= 0:
            raise FormatError(f"chunk plan: chunk_size must be > 0, got {self.chunk_size}")
        expected = chunk_count(self.total_size, self.chunk_size)
        if len(self.chunk_digests) != expected:
            raise FormatError(
                f"chunk plan: {len(self.chunk_digests)} digests for {self.total_size} bytes "
                f"in chunks of {self.chunk_size} (expected {expected})"
            )
        for digest in self.chunk_digests:
            if not _DIGEST_RE.match(digest):
                raise FormatError(f"chunk plan: not a sha256 digest: {digest[:80]!r}")

    @property
    def count(self) -> int:
        """Number of chunks."""
        return len(self.chunk_digests)

    def start(self, index: int) -> int:
        """Offset of chunk ``index`` in the region."""
        return index * self.chunk_size

    def end(self, index: int) -> int:
        """Offset just past chunk ``index`` in the region."""
        return min(self.total_size, (index + 1) * self.chunk_size)

    def index_at(self, offset: int) -> int:
        """The chunk holding region offset ``offset``."""
        return offset // self.chunk_size


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, end)`` of a region."""

    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


def chunk_count(total_size: int, chunk_size: int) -> int:
    """How many chunks of ``chunk_size`` cover ``total_size`` bytes."""
    return -(-total_size // chunk_size)


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chunk_ok(plan: ChunkPlan, index: int, data: bytes) -> bool:
    """Whether ``data`` is exactly chunk ``index`` of the plan."""
    if len(data) != plan.end(index) - plan.start(index):
        return False
    return sha256_digest(data) == plan.chunk_digests[index]


def ranges_to_fetch(plan: ChunkPlan, good: Sequence[bool], have: int) -> list[ByteRange]:
    """Byte ranges still needed, given which chunks verified and how much is on disk.

    ``good[i]`` says chunk ``i`` verified; ``have`` is the local file's size.
    Neighbouring bad or missing chunks merge into one range (one request). The
    chunk ``have`` ends inside is partial: its range starts at ``have``, keeping the
    prefix already on disk; if that prefix turns out bad, the chunk fails its
    digest on completion and is fetched whole.
    """
    if len(good) != plan.count:
        raise ValueError("one verdict per chunk expected")
    have = min(max(have, 0), plan.total_size)
    ranges: list[ByteRange] = []
    for index in range(plan.count):
        if good[index]:
            continue
        start, end = plan.start(index), plan.end(index)
        if start < have < end:
            start = have
        if ranges and ranges[-1].end == start:
            ranges[-1] = ByteRange(ranges[-1].start, end)
        else:
            ranges.append(ByteRange(start, end))
    return ranges


def make_plan(
    path: Path,
    chunk_size: int,
    *,
    region_offset: int = 0,
    region_size: int | None = None,
) -> ChunkPlan:
    """Compute the plan of ``region_size`` bytes of ``path`` from ``region_offset``.

    Used by whoever publishes a file (the bundle builder, tests) to produce the
    digests a downloader will check against.

    Raises:
        StorageError: the file cannot be read or is shorter than the region.
    """
    digests: list[str] = []
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell() - region_offset if region_size is None else region_size
            if size < 0:
                raise StorageError(f"{path}: region offset {region_offset} is past its end")
            f.seek(region_offset)
            remaining = size
            while remaining > 0:
                data = f.read(min(chunk_size, remaining))
                if not data:
                    raise StorageError(f"{path}: ends before the region's {size} bytes")
                digests.append(sha256_digest(data))
                remaining -= len(data)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    return ChunkPlan(size, chunk_size, tuple(digests), region_offset)
