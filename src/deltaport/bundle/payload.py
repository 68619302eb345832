"""Hashing and checking the payload region as it streams by, in fixed-size chunks.

The payload region is everything after the head: per member its tar header, data and
padding, then the end-of-archive blocks. :class:`ChunkHasher` computes the chunk
digests while the writer produces it; :class:`PayloadVerifier` checks, in one pass
that is fed chunk after chunk, the chunk digests, every member digest and that the
tar framing is exactly what the index implies. Both are pure: bytes in, verdicts out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from deltaport.bundle.format import END_OF_ARCHIVE_SIZE, pad_length
from deltaport.bundle.head import verify_chunk
from deltaport.bundle.index import BundleIndex, MemberInfo
from deltaport.bundle.tarblocks import member_header
from deltaport.errors import FormatError, IntegrityError, TruncatedError


class ChunkHasher:
    """sha256 digests of consecutive ``chunk_size`` pieces of a stream fed in any slices."""

    def __init__(self, chunk_size: int) -> None:
        self._chunk_size = chunk_size
        self._hash = hashlib.sha256()
        self._filled = 0
        self._digests: list[str] = []

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next bytes of the stream."""
        view = memoryview(data)
        while view:
            take = min(self._chunk_size - self._filled, len(view))
            self._hash.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self._chunk_size:
                self._close_chunk()

    def _close_chunk(self) -> None:
        self._digests.append("sha256:" + self._hash.hexdigest())
        self._hash = hashlib.sha256()
        self._filled = 0

    def finish(self) -> tuple[str, ...]:
        """All chunk digests, the last chunk possibly short."""
        if self._filled:
            self._close_chunk()
        return tuple(self._digests)


@dataclass(frozen=True)
class _Segment:
    """A contiguous run of payload bytes: one member's data, or framing with known bytes."""

    start: int
    end: int
    member: MemberInfo | None
    framing: bytes = b""


def _segments(index: BundleIndex) -> list[_Segment]:
    segments: list[_Segment] = []
    pos = 0
    for m in index.members:
        segments.append(_Segment(pos, m.offset, None, member_header(m.name, m.size)))
        segments.append(_Segment(m.offset, m.offset + m.size, m))
        pos = m.offset + m.size + pad_length(m.size)
        segments.append(_Segment(m.offset + m.size, pos, None, bytes(pos - m.offset - m.size)))
    segments.append(_Segment(pos, pos + END_OF_ARCHIVE_SIZE, None, bytes(END_OF_ARCHIVE_SIZE)))
    return segments


class PayloadVerifier:
    """Checks a whole payload fed chunk by chunk, in order, from chunk 0.

    Raises (from :meth:`feed` and :meth:`finish`):
        IntegrityError: a chunk or a member does not match its digest (naming it).
        TruncatedError: :meth:`finish` before the whole payload was fed.
        FormatError: the tar framing differs from what the index implies.
    """

    def __init__(self, index: BundleIndex) -> None:
        self._index = index
        self._segments = _segments(index)
        self._seg = 0
        self._pos = 0
        self._next_chunk = 0
        self._hash = hashlib.sha256()

    def feed(self, data: bytes) -> None:
        """Check the next chunk (all its bytes, as in ``index.chunk_range``)."""
        verify_chunk(self._index, self._next_chunk, data)
        self._next_chunk += 1
        view = memoryview(data)
        while view:
            segment = self._segments[self._seg]
            take = min(segment.end - self._pos, len(view))
            self._consume(segment, view[:take])
            self._pos += take
            view = view[take:]
            self._advance()

    def _consume(self, segment: _Segment, part: memoryview) -> None:
        if segment.member is not None:
            self._hash.update(part)
            return
        at = self._pos - segment.start
        if part != segment.framing[at : at + len(part)]:
            raise FormatError(
                f"bundle tar framing at payload byte {self._pos} does not match its index"
            )

    def _advance(self) -> None:
        """Close every segment that ends at the current position (incl. empty members)."""
        while self._seg < len(self._segments) and self._segments[self._seg].end <= self._pos:
            member = self._segments[self._seg].member
            if member is not None:
                actual = "sha256:" + self._hash.hexdigest()
                if actual != member.digest:
                    raise IntegrityError(
                        f"bundle member {member.name!r} does not match its digest "
                        f"(expected {member.digest}, got {actual})"
                    )
                self._hash = hashlib.sha256()
            self._seg += 1

    def finish(self) -> None:
        """Confirm the whole payload was fed."""
        self._advance()
        if self._next_chunk != self._index.chunk_count:
            raise TruncatedError(
                f"bundle payload checked up to chunk {self._next_chunk} "
                f"of {self._index.chunk_count}"
            )
