"""Builder side of sections: raw spill files compressed at the end with a known size.

Compressing with the content size known lets the device's decoder allocate a window
no larger than the section, which keeps apply memory small for small sections.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import tempfile
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from deltaport.delta.pool import pool_imap
from deltaport.delta.protocol import CODEC_XZ, CODEC_ZSTD

_SAMPLE = 1 << 20  # bytes of a section the xz-or-zstd probe compresses both ways
_MT_MIN = 8 << 20  # threads and long-distance matching only pay for sections at least this big
_TEXT_MARGIN = 0.99  # xz must beat zstd by 1 % on the sample: zstd has the literal dictionary
_TEXT_DICT_MAX = 64 << 20  # LZMA2 dictionary of a text section (the decoder allocates it)


@dataclass(frozen=True)
class Encoded:
    """A compressed section in a temp file."""

    name: str
    codec: str
    file: BinaryIO
    length: int
    raw_length: int
    sha256: str


X86_MACHINES = frozenset({3, 62})  # ELF e_machine of i386 and x86-64 code


def elf_machine(head: bytes) -> int | None:
    """The e_machine of an ELF file from its first 20 bytes (None: not ELF)."""
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[5] not in (1, 2):
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


class RawSection:
    """Raw bytes of one section, spilled to a temp file while the patch is planned.

    The file has a name (``path``, removed on close) so that worker processes of the
    parallel xz encoder open it themselves: they are not forked (``delta.pool``).
    For code it counts the bytes of x86 ELF files and of other architectures': x86's
    branch filter (BCJ) is used only where x86 code is the larger part (on AArch64
    code it costs bytes: Debian's arm64 python3.11, xz -6: +0.4 %).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._spill = tempfile.NamedTemporaryFile(prefix="deltaport-section-")  # noqa: SIM115
        self.file: BinaryIO = self._spill.file  # type: ignore[assignment]
        self.path = self._spill.name
        self.length = 0
        self.x86_code = 0  # bytes of files whose ELF header names an x86 machine
        self.other_code = 0  # bytes of ELF files of other machines

    def write(self, data: bytes) -> None:
        """Append raw bytes."""
        self.file.write(data)
        self.length += len(data)

    def write_elf(self, data: bytes) -> None:
        """Append one ELF file's bytes (or a part of one: only a header is counted)."""
        machine = elf_machine(data[:20])
        if machine in X86_MACHINES:
            self.x86_code += len(data)
        elif machine is not None:
            self.other_code += len(data)
        self.write(data)

    @property
    def x86_bcj(self) -> bool:
        """Whether the x86 branch filter goes before LZMA2 (x86 code is the larger part)."""
        return self.x86_code >= self.other_code

    def close(self) -> None:
        """Drop the spill file."""
        self._spill.close()


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
    raw: RawSection, *, level: int, window_log: int, threads: int, dict_data: bytes | None = None,
    job_size: int = 16 << 20, overlap_log: int = 6,
) -> Encoded:
    """Compress a raw section with zstd, long-range matching on, content size in the header.

    With threads, the section is cut into jobs of at least job_size bytes (and at most
    one per thread) compressed in parallel,
    each seeing ``window >> (9 - overlap_log)`` bytes of the previous job: zstd's own
    job size at level 19 is four windows (128 MiB), which leaves layer-sized sections
    on one core. The output stays one frame.
    """
    mt = threads if raw.length > _MT_MIN else 0
    extra: dict[str, int] = {}
    if mt:
        per_thread = -(-raw.length // mt)  # one job per thread at least: fewest cuts
        extra = {"job_size": max(_MT_MIN, job_size, per_thread), "overlap_log": overlap_log}
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        source_size=raw.length,
        window_log=_window_log(raw.length, window_log),
        enable_ldm=raw.length > _MT_MIN,
        threads=mt,
        write_content_size=True,
        **extra,
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


def _xz_filters(raw_length: int, preset: int, bcj: bool = True) -> list[dict[str, int]]:
    """x86 BCJ (where BCJ) then LZMA2 at preset, with a lighter match search than the
    preset's. The .xz stream names its filters: a reader needs no other word of them.

    nice_len 32 / depth 16 cost well under 1 % of size on x86 code and text against
    the presets' defaults and run about a third faster.
    """
    dict_size = max(1 << 16, min(32 << 20, 1 << max(raw_length - 1, 1).bit_length()))
    lzma2 = {"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": dict_size,
             "nice_len": 32, "depth": 16}
    return [{"id": lzma.FILTER_X86}, lzma2] if bcj else [lzma2]


def _xz_text_filters(raw_length: int, preset: int) -> list[dict[str, int]]:
    """LZMA2 alone for file contents other than code: strongest match search, pb 0.

    No BCJ (it only helps x86 code); ``pb=0`` (no position alignment: text and
    scripts have none) and ``nice_len`` 273 win about 5 % over zstd -19 on an npm
    layer's literals. The dictionary covers the whole section (at most 64 MiB), so
    files late in the section still match packages early in it.
    """
    dict_size = max(1 << 16, min(_TEXT_DICT_MAX, 1 << max(raw_length - 1, 1).bit_length()))
    return [
        {
            "id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": dict_size,
            "nice_len": 273, "pb": 0,
        },
    ]


def _filters(raw_length: int, preset: int, text: bool, bcj: bool = True) -> list[dict[str, int]]:
    if text:
        return _xz_text_filters(raw_length, preset)
    return _xz_filters(raw_length, preset, bcj)


def _xz_stream(path: str, offset: int, length: int, preset: int, text: bool = False,
               bcj: bool = True) -> bytes:
    """One complete .xz stream of LENGTH bytes at OFFSET of the file at PATH."""
    comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ,
                               filters=_filters(length, preset, text, bcj))
    parts: list[bytes] = []
    end = offset + length
    with open(path, "rb") as f:
        while offset < end:
            chunk = os.pread(f.fileno(), min(1 << 20, end - offset), offset)
            if not chunk:
                raise OSError("section spill file is shorter than written")
            parts.append(comp.compress(chunk))
            offset += len(chunk)
    parts.append(comp.flush())
    return b"".join(parts)


def _xz_piece(job: tuple[str, int, int, int, bool]) -> bytes:
    """_xz_stream of one piece (runs in worker processes)."""
    path, offset, length, preset, bcj = job
    return _xz_stream(path, offset, length, preset, bcj=bcj)


def _xz_pieces(length: int, workers: int, piece: int) -> list[tuple[int, int]]:
    """(offset, length) of the independent xz streams a section is cut into.

    As many pieces as workers at least (so every core is busy), each at most piece
    bytes, of near-equal size.
    """
    count = max(1, -(-length // max(piece, 1)))
    if length >= 2 * _SAMPLE:
        count = max(count, workers)
        count = -(-count // workers) * workers
    base = -(-length // count)
    return [(off, min(base, length - off)) for off in range(0, length, base)]


def xz_compress(
    raw: RawSection, *, preset: int, workers: int = 1, piece: int = 64 << 20, text: bool = False
) -> Encoded:
    """Compress a raw section with xz: (x86 BCJ then) LZMA2 for ELF executables, or text.

    The section is cut into independent .xz streams, concatenated, compressed by up
    to ``workers`` processes in parallel (LZMA2 is single-threaded in Python's lzma).
    With ``text`` (literal/delta sections of delta patches) it is a single stream: cut
    in two, the npm literals of the S1 benchmark grew 8 % (later packages match earlier).
    """
    if text:
        workers, piece = 1, max(raw.length, 1)
    raw.file.flush()
    pieces = _xz_pieces(raw.length, workers, piece)
    out: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller
    if workers < 2 or len(pieces) < 2:
        for off, n in pieces:
            out.write(_xz_stream(raw.path, off, n, preset, text, raw.x86_bcj))
    else:
        jobs = [(raw.path, off, n, preset, raw.x86_bcj) for off, n in pieces]
        for stream in pool_imap(_xz_piece, jobs, min(workers, len(pieces))):
            out.write(stream)
    return _finish(raw.name, CODEC_XZ, out, raw.length)


def xz_wins(raw: RawSection, *, level: int, preset: int, text: bool = False) -> bool:
    """Whether xz beats zstd on a sample of the section (ELF code with BCJ usually: yes).

    With ``text`` the section is compared without BCJ and with the text filters, and
    xz must win by ``_TEXT_MARGIN``: zstd also gets the literal dictionary and
    long-distance matching, which the sample does not show.
    """
    raw.file.flush()
    middle = raw.length // 2 if raw.length > 2 * _SAMPLE else 0
    sample = os.pread(raw.file.fileno(), _SAMPLE, middle)
    if not sample:
        return False
    comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ,
                               filters=_filters(len(sample), preset, text, raw.x86_bcj))
    xz_len = len(comp.compress(sample) + comp.flush())
    zstd_len = len(zstandard.ZstdCompressor(level=level).compress(sample))
    return xz_len < (_TEXT_MARGIN if text else 1.0) * zstd_len
