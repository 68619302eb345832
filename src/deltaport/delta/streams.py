"""Readers and writers the patch format is made of: sections, decoders, a hashing sink."""

from __future__ import annotations

import hashlib
import lzma
from typing import BinaryIO, Protocol

import zstandard

from deltaport.errors import FormatError, IntegrityError, TruncatedError

CHUNK = 1 << 20


class ExactReader(Protocol):
    """A stream that returns exactly n bytes or raises."""

    def read_exact(self, n: int) -> bytes: ...


class SectionReader:
    """A window [start, start+length) of a shared seekable file, with its own position."""

    def __init__(self, f: BinaryIO, start: int, length: int) -> None:
        self._f = f
        self._pos = start
        self._end = start + length

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes of the section (all that is left for n < 0)."""
        left = self._end - self._pos
        if n < 0 or n > left:
            n = left
        if n <= 0:
            return b""
        self._f.seek(self._pos)
        data = self._f.read(n)
        self._pos += len(data)
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        """io.RawIOBase-style readinto, for zstandard's stream reader."""
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


class BufferedDecoder:
    """Decoded bytes of one section, read exactly and in order."""

    def __init__(self, raw: BinaryIO | SectionReader, name: str) -> None:
        self._raw = raw
        self._name = name
        self._buf = bytearray()

    def _fill(self, want: int) -> None:
        while len(self._buf) < want:
            try:
                data = self._raw.read(max(CHUNK, want - len(self._buf)))
            except (zstandard.ZstdError, lzma.LZMAError, EOFError) as exc:
                raise FormatError(f"patch section {self._name!r} is corrupt: {exc}") from exc
            if not data:
                raise TruncatedError(f"patch section {self._name!r} ends early")
            self._buf += data

    def read_exact(self, n: int) -> bytes:
        """Exactly n decoded bytes."""
        if n > len(self._buf):
            self._fill(n)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def read_byte(self) -> int:
        """One decoded byte (op codes, varints)."""
        if not self._buf:
            self._fill(1)
        value = self._buf[0]
        del self._buf[:1]
        return value

    def read(self, n: int) -> bytes:
        """read(1) for protocol.read_varint; returns b'' at the end."""
        try:
            return self.read_exact(n)
        except TruncatedError:
            return b""


class _XzReader:
    """Decodes one or more concatenated .xz streams (format 2 cuts big sections in pieces)."""

    def __init__(self, raw: SectionReader, memlimit: int) -> None:
        self._raw = raw
        self._memlimit = memlimit
        self._dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=memlimit)
        self._pending = b""  # input read past the end of the previous stream

    def read(self, n: int) -> bytes:
        while True:
            if self._dec.eof:
                self._pending = self._dec.unused_data
                if not self._pending:
                    self._pending = self._raw.read(CHUNK)
                    if not self._pending:
                        return b""
                self._dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=self._memlimit)
            if self._pending:
                chunk, self._pending = self._pending, b""
            elif self._dec.needs_input:
                chunk = self._raw.read(CHUNK)
                if not chunk:
                    return b""
            else:
                chunk = b""
            out = self._dec.decompress(chunk, max_length=n)
            if out:
                return out


def open_decoder(
    raw: SectionReader, name: str, codec: str, *, window_log: int, xz_memory: int,
    dict_data: bytes | None = None,
) -> BufferedDecoder:
    """A decoder for one section: zstd (optionally with a raw-content dictionary) or xz."""
    if codec == "xz":
        return BufferedDecoder(_XzReader(raw, xz_memory), name)  # type: ignore[arg-type]
    zdict = (
        zstandard.ZstdCompressionDict(dict_data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        if dict_data
        else None
    )
    dctx = zstandard.ZstdDecompressor(dict_data=zdict, max_window_size=1 << window_log)
    reader = dctx.stream_reader(raw, read_across_frames=True)  # type: ignore[arg-type]
    return BufferedDecoder(reader, name)


class HashingSink:
    """Writes to out, hashing and counting; refuses to go past the declared size."""

    def __init__(self, out: BinaryIO, limit: int) -> None:
        self._out = out
        self._limit = limit
        self.count = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        """Append bytes of the rebuilt tar."""
        if self.count + len(data) > self._limit:
            raise FormatError("patch produces more bytes than its declared target size")
        self.sha256.update(data)
        self._out.write(data)
        self.count += len(data)

    def verify(self, diff_id: str) -> None:
        """Raise IntegrityError unless the output is exactly the target layer."""
        actual = "sha256:" + self.sha256.hexdigest()
        if self.count != self._limit or actual != diff_id:
            raise IntegrityError(
                f"rebuilt layer {diff_id} does not match: got {actual} ({self.count} bytes)"
            )
