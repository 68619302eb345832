"""Layer compression: detection by magic bytes, streaming decompression and compression.

Everything streams: a reader decompresses as it is read, a writer compresses as it is
written, so memory never grows with layer size. Errors of the codecs are mapped here
to FormatError / TruncatedError.
"""

from __future__ import annotations

import enum
import gzip
import io
import zlib
from typing import IO, BinaryIO, cast

import zstandard

from deltaport.errors import FormatError, TruncatedError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_LEVEL = 6
ZSTD_LEVEL = 3
READ_SIZE = 1 << 16
ZSTD_FEED = 1024


class Compression(enum.Enum):
    """How a layer blob is stored."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


def detect_compression(head: bytes) -> Compression:
    """The compression whose magic bytes start HEAD (tar is NONE)."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


class _DecompressingReader(io.RawIOBase):
    """A raw reader over a gzip decoder that maps its errors to ours, naming WHAT."""

    def __init__(self, inner: IO[bytes], what: str) -> None:
        self._inner = inner
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self._inner.read(len(buffer))
        except EOFError as exc:
            raise TruncatedError(f"{self._what}: compressed data ends early") from exc
        except (OSError, zlib.error, zstandard.ZstdError) as exc:
            raise FormatError(f"{self._what}: cannot decompress: {exc}") from exc
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


class _ZstdReader(io.RawIOBase):
    """Streaming zstd decoder that notices a truncated frame (zstandard's stream_reader
    silently stops). Input is fed in ZSTD_FEED-byte pieces, which bounds the output of
    one step (zstd expands at most ~32768:1) for hostile input."""

    def __init__(self, inner: IO[bytes], what: str) -> None:
        self._inner = inner
        self._what = what
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._in_frame = False
        self._input = b""
        self._output = b""

    def readable(self) -> bool:
        return True

    def _step(self) -> bool:
        """Decode one piece of input into _output; False at clean end of input."""
        if not self._input:
            self._input = self._inner.read(READ_SIZE)
            if not self._input:
                if self._in_frame:
                    raise TruncatedError(f"{self._what}: zstd data ends inside a frame")
                return False
        piece, self._input = self._input[:ZSTD_FEED], self._input[ZSTD_FEED:]
        try:
            self._in_frame = True
            self._output += self._obj.decompress(piece)
            if self._obj.eof:
                self._input = self._obj.unused_data + self._input
                self._obj = self._dctx.decompressobj()
                self._in_frame = False
        except zstandard.ZstdError as exc:
            raise FormatError(f"{self._what}: cannot decompress zstd: {exc}") from exc
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._output:
            if not self._step():
                return 0
        n = min(len(buffer), len(self._output))
        buffer[:n] = self._output[:n]
        self._output = self._output[n:]
        return n


def decompressing_reader(stream: BinaryIO, compression: Compression, what: str) -> BinaryIO:
    """A reader yielding the uncompressed bytes of STREAM (which is not closed)."""
    if compression is Compression.NONE:
        return stream
    raw: io.RawIOBase
    if compression is Compression.GZIP:
        raw = _DecompressingReader(cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb")), what)
    else:
        raw = _ZstdReader(stream, what)
    return cast(BinaryIO, io.BufferedReader(raw, READ_SIZE))


class CompressingWriter:
    """Compresses what is written into OUT; close() flushes the codec, not OUT."""

    def __init__(self, out: BinaryIO, compression: Compression) -> None:
        self.compression = compression
        self._out = out
        self._inner: IO[bytes] | None
        if compression is Compression.NONE:
            self._inner = None
        elif compression is Compression.GZIP:
            self._inner = cast(
                IO[bytes],
                gzip.GzipFile(fileobj=out, mode="wb", compresslevel=GZIP_LEVEL, mtime=0),
            )
        else:
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
            self._inner = cast(IO[bytes], compressor.stream_writer(out, closefd=False))

    def write(self, data: bytes) -> int:
        if self._inner is None:
            self._out.write(data)
        else:
            self._inner.write(data)
        return len(data)

    def close(self) -> None:
        """Finish the compressed stream (OUT stays open)."""
        if self._inner is not None:
            self._inner.close()
            self._inner = None
