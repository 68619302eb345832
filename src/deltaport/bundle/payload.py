"""Hashing and checking the payload region as it streams by, in fixed-size chunks.

The payload region is everything after the head: the members' data back to back.
:class:`ChunkHasher` computes the chunk digests while the writer produces it;
:class:`PayloadVerifier` checks, in one pass that is fed chunk after chunk, the chunk
digests and every member digest. Both are pure: bytes in, verdicts out.
"""

from __future__ import annotations

import hashlib

from deltaport.bundle.head import verify_chunk
from deltaport.bundle.index import BundleIndex
from deltaport.errors import IntegrityError, TruncatedError


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



class PayloadVerifier:
    """Checks a whole payload fed chunk by chunk, in order, from chunk 0.

    Raises (from :meth:`feed` and :meth:`finish`):
        IntegrityError: a chunk or a member does not match its digest (naming it).
        TruncatedError: :meth:`finish` before the whole payload was fed.
    """

    def __init__(self, index: BundleIndex) -> None:
        self._index = index
        self._members = index.members
        self._member = 0  # the member whose bytes come next
        self._pos = 0
        self._next_chunk = 0
        self._hash = hashlib.sha256()

    def feed(self, data: bytes) -> None:
        """Check the next chunk (all its bytes, as in ``index.chunk_range``)."""
        verify_chunk(self._index, self._next_chunk, data)
        self._next_chunk += 1
        view = memoryview(data)
        self._advance()
        while view and self._member < len(self._members):
            member = self._members[self._member]
            take = min(member.offset + member.size - self._pos, len(view))
            self._hash.update(view[:take])
            self._pos += take
            view = view[take:]
            self._advance()

    def _advance(self) -> None:
        """Check every member that ends at the current position (incl. empty members)."""
        while self._member < len(self._members):
            member = self._members[self._member]
            if member.offset + member.size > self._pos:
                return
            actual = "sha256:" + self._hash.hexdigest()
            if actual != member.digest:
                raise IntegrityError(
                    f"bundle member {member.name!r} does not match its digest "
                    f"(expected {member.digest}, got {actual})"
                )
            self._hash = hashlib.sha256()
            self._member += 1

    def finish(self) -> None:
        """Confirm the whole payload was fed."""
        self._advance()
        if self._next_chunk != self._index.chunk_count:
            raise TruncatedError(
                f"bundle payload checked up to chunk {self._next_chunk} "
                f"of {self._index.chunk_count}"
            )
