"""Builder side of sections: raw spill files compressed at the end with a known size.

Compressing with the content size known lets the device's decoder allocate a window
no larger than the section, which keeps apply memory small for small sections.
"""

from __future__ import annotations

import hashlib
import lzma
import tempfile
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from deltaport.delta.protocol import CODEC_XZ, CODEC_ZSTD

_SAMPLE = 4 << 20
_MT_MIN = 8 << 20  # threads and long-distance matching only pay for sections at least this big


@dataclass(frozen=True)
class Encoded:
    """A compressed section in a temp file."""

    name: str
    codec: str
    file: BinaryIO
    length: int
    raw_length: int
    sha256: str


class RawSection:
    """Raw bytes of one section, spilled to a temp file while the patch is planned."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.file: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - closed by owner
        self.length = 0

    def write(self, data: bytes) -> None:
        """Append raw bytes."""
        self.file.write(data)
        self.length += len(data)

    def close(self) -> None:
        """Drop the spill file."""
        self.file.close()


def _window_log(raw_length: int, max_log: int) -> int:
    log = max(raw_length - 1, 1).bit_length()
    return max(10, min(max_log, log))


def finish_encoded(name: str, codec: str, out: BinaryIO, raw_length: int) -> Encoded:
    """Describe an already encoded section file (hashing it, rewinding it)."""
    out.seek(0, 2)
    return _finish(name, codec, out, raw_length)


def _finish(name: str, codec: str, out: BinaryIO, raw_length: int) -> Encoded:
    length = out.tell()
    out.seek(0)
    digest = hashlib.sha256()
    while chunk := out.read(1 << 20):
        digest.update(chunk)
    out.seek(0)
    return Encoded(name, codec, out, length, raw_length, "sha256:" + digest.hexdigest())


def zstd_compress(
    raw: RawSection, *, level: int, window_log: int, threads: int, dict_data: bytes | None = None
) -> Encoded:
    """Compress a raw section with zstd, long-range matching on, content size in the header."""
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        source_size=raw.length,
        window_log=_window_log(raw.length, window_log),
        enable_ldm=raw.length > _MT_MIN,
        threads=threads if raw.length > _MT_MIN else 0,
        write_content_size=True,
    )
    zdict = (
        zstandard.ZstdCompressionDict(dict_data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        if dict_data
        else None
    )
    cctx = zstandard.ZstdCompressor(compression_params=params, dict_data=zdict)
    out: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller
    raw.file.seek(0)
    cctx.copy_stream(raw.file, out, size=raw.length)
    return _finish(raw.name, CODEC_ZSTD, out, raw.length)


def _xz_filters(raw_length: int, preset: int) -> list[dict[str, int]]:
    dict_size = max(1 << 16, min(32 << 20, 1 << max(raw_length - 1, 1).bit_length()))
    return [
        {"id": lzma.FILTER_X86},
        {"id": lzma.FILTER_LZMA2, "preset": preset | lzma.PRESET_EXTREME, "dict_size": dict_size},
    ]


def xz_compress(raw: RawSection, *, preset: int) -> Encoded:
    """Compress a raw section with xz: x86 BCJ then LZMA2 (for ELF executables)."""
    comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, filters=_xz_filters(raw.length, preset))
    out: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller
    raw.file.seek(0)
    while chunk := raw.file.read(1 << 20):
        out.write(comp.compress(chunk))
    out.write(comp.flush())
    return _finish(raw.name, CODEC_XZ, out, raw.length)


def xz_wins(raw: RawSection, *, level: int, preset: int) -> bool:
    """Whether xz+BCJ beats zstd on a sample of the section (ELF code usually: yes)."""
    raw.file.seek(0)
    sample = raw.file.read(_SAMPLE)
    if not sample:
        return False
    comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, filters=_xz_filters(len(sample), preset))
    xz_len = len(comp.compress(sample) + comp.flush())
    zstd_len = len(zstandard.ZstdCompressor(level=level).compress(sample))
    return xz_len < zstd_len
