"""The header section: chunks of tar header bytes, each zstd-compressed against the
matching slice of a source layer's header stream.

A layer of 50,000 files has ~40 MB of headers; a single dictionary cannot cover the
source's, and a device cannot hold them all. So the target header stream is cut into
chunks of about ``DeltaConfig.header_chunk`` bytes and the builder names, per chunk, a
source and a byte range of that source's (transformed) header stream — the range the
chunk's members came from — which both sides rebuild from the source tar.

Record layout (all varints): ``source+1`` (0 = no dictionary), ``dict_offset``,
``dict_length``, ``raw_length``, ``frame_length``, then the zstd frame.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import zstandard

from deltaport.delta import protocol as p
from deltaport.delta.streams import BufferedDecoder, SectionReader
from deltaport.delta.tarscan import TarLayout, common_mtime_field, transform_headers
from deltaport.errors import FormatError, IntegrityError, TruncatedError


class HeaderStream:
    """Random access to the transformed header stream of a source tar (built lazily)."""

    def __init__(self, f: BinaryIO, layout: TarLayout) -> None:
        self._f = f
        self._layout = layout
        self._mtime = common_mtime_field(layout)
        self.starts: list[int] = []
        total = 0
        for entry in layout.entries:
            self.starts.append(total)
            total += entry.header_len
        self.size = total

    def slice(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the header stream."""
        if offset + length > self.size:
            raise FormatError("header dictionary range is past the source's headers")
        if length == 0:
            return b""
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        parts: list[bytes] = []
        pos = first = self.starts[i]
        end = offset + length
        while pos < end and i < len(self._layout.entries):
            entry = self._layout.entries[i]
            self._f.seek(entry.header_offset)
            raw = self._f.read(entry.header_len)
            if len(raw) != entry.header_len:
                raise IntegrityError("source layer ends inside a header")
            parts.append(transform_headers(raw, self._mtime))
            pos += entry.header_len
            i += 1
        data = b"".join(parts)
        return data[offset - first : offset - first + length]


@dataclass
class _Chunk:
    data: bytearray = field(default_factory=bytearray)
    matches: list[tuple[int, int, int]] = field(default_factory=list)  # (src, offset, length)


def _best_range(matches: list[tuple[int, int, int]], limit: int) -> tuple[int, int, int] | None:
    """(source, offset, length) covering the most matched bytes within limit bytes."""
    by_src: dict[int, list[tuple[int, int]]] = {}
    for src, off, n in matches:
        by_src.setdefault(src, []).append((off, n))
    best: tuple[int, int, int, int] | None = None  # covered, src, start, end
    for src, spans in by_src.items():
        spans.sort()
        lo = 0
        covered = 0
        for hi in range(len(spans)):
            covered += spans[hi][1]
            while spans[hi][0] + spans[hi][1] - spans[lo][0] > limit:
                covered -= spans[lo][1]
                lo += 1
            if best is None or covered > best[0]:
                best = (covered, src, spans[lo][0], spans[hi][0] + spans[hi][1])
    if best is None:
        return None
    return best[1], best[2], best[3] - best[2]


class HeaderWriter:
    """Builder side: collects header bytes with their source matches, writes chunk records."""

    def __init__(
        self, out: BinaryIO, streams: list[HeaderStream], *, chunk: int, dict_limit: int,
        level: int,
    ) -> None:
        self._out = out
        self._streams = streams
        self._chunk_size = chunk
        self._dict_limit = dict_limit
        self._level = level
        self._chunk = _Chunk()
        self.length = 0
        self.raw_length = 0

    def write(self, data: bytes, match: tuple[int, int, int] | None = None) -> None:
        """Append header bytes; match = (source index, header stream offset, length)."""
        self._chunk.data += data
        if match is not None:
            self._chunk.matches.append(match)
        if len(self._chunk.data) >= self._chunk_size:
            self.flush()

    def flush(self) -> None:
        """Compress and write the current chunk (if any)."""
        chunk, self._chunk = self._chunk, _Chunk()
        if not chunk.data:
            return
        rng = _best_range(chunk.matches, self._dict_limit)
        dict_data = self._streams[rng[0]].slice(rng[1], rng[2]) if rng else b""
        params = zstandard.ZstdCompressionParameters.from_level(
            self._level, source_size=len(chunk.data) + len(dict_data),
            window_log=max(10, min(27, (len(chunk.data) + len(dict_data)).bit_length())),
            write_content_size=True,
        )
        zdict = (
            zstandard.ZstdCompressionDict(dict_data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            if dict_data
            else None
        )
        frame = zstandard.ZstdCompressor(compression_params=params, dict_data=zdict).compress(
            bytes(chunk.data)
        )
        head = bytearray()
        src, off, n = (rng[0] + 1, rng[1], rng[2]) if rng and dict_data else (0, 0, 0)
        for v in (src, off, n, len(chunk.data), len(frame)):
            p.write_varint(head, v)
        self._out.write(bytes(head) + frame)
        self.length += len(head) + len(frame)
        self.raw_length += len(chunk.data)


DictSource = Callable[[int, int, int], bytes]


class HeaderReader(BufferedDecoder):
    """Applier side: decodes chunk records in order, rebuilding each chunk's dictionary."""

    def __init__(
        self, raw: SectionReader, dict_for: DictSource, *, max_chunk: int, max_dict: int,
        window_log: int,
    ) -> None:
        super().__init__(raw, p.SECTION_HEADERS)
        self._section = raw
        self._dict_for = dict_for
        self._max_chunk = max_chunk
        self._max_dict = max_dict
        self._window_log = window_log

    def _varint(self) -> int:
        return p.read_varint(self._section)  # type: ignore[arg-type]

    def _fill(self, want: int) -> None:
        while len(self._buf) < want:
            try:
                src = self._varint()
            except TruncatedError as exc:
                raise TruncatedError("patch header section ends early") from exc
            off, n, raw_len, frame_len = (self._varint() for _ in range(4))
            if raw_len > self._max_chunk or n > self._max_dict or frame_len > 2 * self._max_chunk:
                raise FormatError("patch header chunk is over the limits")
            frame = self._section.read(frame_len)
            if len(frame) != frame_len:
                raise TruncatedError("patch header section ends inside a chunk")
            self._buf += self._decode(src, off, n, raw_len, frame)

    def _decode(self, src: int, off: int, n: int, raw_len: int, frame: bytes) -> bytes:
        dict_data = self._dict_for(src - 1, off, n) if src else b""
        zdict = (
            zstandard.ZstdCompressionDict(dict_data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            if dict_data
            else None
        )
        dctx = zstandard.ZstdDecompressor(dict_data=zdict, max_window_size=1 << self._window_log)
        try:
            out = dctx.decompress(frame, max_output_size=raw_len)
        except zstandard.ZstdError as exc:
            raise FormatError(f"patch header chunk is corrupt: {exc}") from exc
        if len(out) != raw_len:
            raise FormatError("patch header chunk has the wrong size")
        return bytes(out)
