"""Byte-exact scanning of uncompressed tar layers, and the header transform.

The scanner records where every member's header blocks, content and padding lie,
so that a patch can carry the exact bytes of everything that is not file content.
It is used identically by the builder (on the target and sources) and the applier
(on sources), so both sides agree on paths and file indexes.

The header transform makes header blocks compress better without losing a bit:
the mtime field is XORed with the layer's most common mtime field and the checksum
field with the checksum the block would have in standard form, so in the common
case both fields become zeros. XOR keeps it a bijection for any input.
"""

from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass
from typing import BinaryIO

from deltaport.delta.protocol import BLOCK
from deltaport.errors import FormatError, TruncatedError

MAX_EXTENDED_HEADER = 1 << 20  # bytes of one PAX / GNU long-name record
MAX_ENTRIES = 4_000_000  # members in one layer
EXTENDED_TYPES = frozenset(b"xgLK")
NO_DATA_TYPES = frozenset(b"123456")
REGULAR_TYPES = frozenset(b"07\x00")

_MTIME = slice(136, 148)
_CHKSUM = slice(148, 156)
_TYPE = 156
_SIZE = slice(124, 136)
_EMPTY_MTIME = bytes(12)
_LOW_BYTES = bytes(range(0x80))


class UnsupportedTarError(FormatError):
    """The tar uses a feature the scanner does not model (e.g. GNU sparse)."""


@dataclass(frozen=True, slots=True)
class TarEntry:
    """One member: header blocks at header_offset, then data_len content bytes, then padding."""

    header_offset: int
    header_len: int
    data_len: int
    pad_len: int
    path: str
    typeflag: int
    linkname: str
    mtime_field: bytes

    @property
    def data_offset(self) -> int:
        """Where the member's content starts in the tar."""
        return self.header_offset + self.header_len

    @property
    def is_regular(self) -> bool:
        """True for regular files (their content is what ops encode)."""
        return self.typeflag in REGULAR_TYPES


@dataclass(frozen=True)
class TarLayout:
    """Every member of a tar plus where the end-of-archive trailer starts."""

    entries: tuple[TarEntry, ...]
    trailer_offset: int
    size: int

    def regular_files(self) -> list[TarEntry]:
        """Regular files in tar order: the n-th one is file index n in ops."""
        return [e for e in self.entries if e.is_regular]


def round_up(n: int) -> int:
    """n rounded up to a whole number of tar blocks."""
    return (n + BLOCK - 1) // BLOCK * BLOCK


def parse_number(field: bytes) -> int:
    """A tar numeric field: octal text, or GNU base-256 (high bit set)."""
    if field and field[0] & 0x80:
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        if field[0] & 0x40:
            raise FormatError("negative number in tar header")
        return value
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError as exc:
        raise FormatError(f"bad number in tar header: {field!r}") from exc


def _header_sum(block: bytes) -> int:
    return sum(block) - sum(block[_CHKSUM]) + 8 * 0x20


def standard_chksum_field(block: bytes) -> bytes:
    """The checksum field as GNU tar / Python / Go write it: six octal digits, NUL, space."""
    return b"%06o\x00 " % _header_sum(block)


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = parse_number(block[_CHKSUM])
    except FormatError:
        return False
    if block[_CHKSUM].strip(b" \x00") == b"":
        return False
    unsigned = _header_sum(block)
    if stored == unsigned:
        return True
    high = block.translate(None, _LOW_BYTES)  # bytes counted negative by signed writers
    return stored == unsigned - 256 * len(high)


def _xor(a: bytes | bytearray, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _transform_block(block: bytes, mtime_field: bytes, restore: bool) -> bytes:
    buf = bytearray(block)
    if restore:
        buf[_MTIME] = _xor(buf[_MTIME], mtime_field)
        buf[_CHKSUM] = _xor(buf[_CHKSUM], standard_chksum_field(bytes(buf)))
    else:
        buf[_CHKSUM] = _xor(buf[_CHKSUM], standard_chksum_field(block))
        buf[_MTIME] = _xor(buf[_MTIME], mtime_field)
    return bytes(buf)


def _safe_size(block: bytes) -> int:
    try:
        return parse_number(block[_SIZE])
    except FormatError:
        return 0


def transform_headers(chunk: bytes, mtime_field: bytes, *, restore: bool = False) -> bytes:
    """Apply (or undo, with restore=True) the header transform to a run of header blocks.

    The walk depends only on the type and size fields, which the transform leaves
    alone, so ``transform_headers(transform_headers(c, m), m, restore=True) == c``
    for every byte string ``c``.
    """
    out = bytearray(chunk)
    pos = 0
    while pos + BLOCK <= len(chunk):
        block = bytes(out[pos : pos + BLOCK])
        out[pos : pos + BLOCK] = _transform_block(block, mtime_field, restore)
        if block[_TYPE] in EXTENDED_TYPES:
            pos += BLOCK + round_up(_safe_size(block))
        else:
            pos += BLOCK
    return bytes(out)


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise FormatError("malformed PAX record")
        try:
            length = int(data[pos:space])
        except ValueError as exc:
            raise FormatError("malformed PAX record length") from exc
        if length <= 0 or pos + length > len(data):
            raise FormatError("PAX record overruns its header")
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _cstr(field: bytes) -> str:
    return field.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def normalize_path(name: str) -> str:
    """The key files are matched by: no leading './' or '/', no trailing '/'."""
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise TruncatedError(f"tar ends inside {what}")
    return data


@dataclass
class _Pending:
    path: str | None = None
    linkname: str | None = None
    size: int | None = None


def _apply_extended(block: bytes, data: bytes, pending: _Pending) -> None:
    kind = block[_TYPE]
    if kind == ord("x"):
        pax = _parse_pax(data)
        if "path" in pax:
            pending.path = pax["path"]
        if "linkpath" in pax:
            pending.linkname = pax["linkpath"]
        if "size" in pax:
            try:
                pending.size = int(pax["size"])
            except ValueError as exc:
                raise FormatError("bad PAX size") from exc
    elif kind == ord("L"):
        pending.path = _cstr(data)
    elif kind == ord("K"):
        pending.linkname = _cstr(data)


def _main_path(block: bytes) -> str:
    name = _cstr(block[0:100])
    if block[257:263] == b"ustar\x00":
        prefix = _cstr(block[345:500])
        if prefix:
            name = prefix + "/" + name
    return name


def _data_len(block: bytes, pending: _Pending) -> int:
    kind = block[_TYPE]
    if kind == ord("S") or kind == ord("M"):
        raise UnsupportedTarError("GNU sparse / multi-volume members are not supported")
    if kind in NO_DATA_TYPES:
        return 0
    size = pending.size if pending.size is not None else parse_number(block[_SIZE])
    if size < 0:
        raise FormatError("negative member size")
    return size


def scan_tar(f: BinaryIO, total_size: int) -> TarLayout:
    """Scan a seekable tar of total_size bytes without reading file contents.

    Raises:
        FormatError / TruncatedError: the bytes are not a tar this scanner models.
    """
    entries: list[TarEntry] = []
    pos = 0
    while pos + BLOCK <= total_size:
        f.seek(pos)
        first = _read_exact(f, BLOCK, "a header")
        if first == bytes(BLOCK):
            break
        entry, pos = _scan_member(f, pos, first, total_size)
        entries.append(entry)
        if len(entries) > MAX_ENTRIES:
            raise FormatError(f"tar has more than {MAX_ENTRIES} members")
    return TarLayout(tuple(entries), min(pos, total_size), total_size)


def _scan_member(f: BinaryIO, start: int, block: bytes, total_size: int) -> tuple[TarEntry, int]:
    pending = _Pending()
    pos = start
    while True:
        if not _checksum_ok(block):
            raise FormatError(f"bad tar header checksum at offset {pos}")
        pos += BLOCK
        if block[_TYPE] not in EXTENDED_TYPES:
            break
        size = parse_number(block[_SIZE])
        if size > MAX_EXTENDED_HEADER:
            raise FormatError(f"extended tar header of {size} bytes is over the limit")
        data = _read_exact(f, round_up(size), "an extended header")[:size]
        _apply_extended(block, data, pending)
        pos += round_up(size)
        block = _read_exact(f, BLOCK, "a header")
    data_len = _data_len(block, pending)
    if pos + data_len > total_size:
        raise TruncatedError("tar ends inside a member's content")
    path = pending.path if pending.path is not None else _main_path(block)
    link = pending.linkname if pending.linkname is not None else _cstr(block[157:257])
    entry = TarEntry(
        header_offset=start,
        header_len=pos - start,
        data_len=data_len,
        pad_len=min(round_up(data_len) - data_len, total_size - pos - data_len),
        path=normalize_path(path),
        typeflag=block[_TYPE],
        linkname=link,
        mtime_field=bytes(block[_MTIME]),
    )
    return entry, pos + data_len + entry.pad_len


def common_mtime_field(layout: TarLayout) -> bytes:
    """The most common mtime field of the layer's main headers (ties: smallest bytes)."""
    counts = collections.Counter(e.mtime_field for e in layout.entries)
    if not counts:
        return _EMPTY_MTIME
    best = max(counts.values())
    return min(field for field, count in counts.items() if count == best)


def header_chunk_info(chunk: bytes) -> tuple[str, int]:
    """The normalized path and content length of the member a run of header blocks starts.

    Reads them the way scan_tar does; malformed records give ('', 0) parts rather
    than errors, since the applier only uses them to find files and sizes that the
    final digest check covers.
    """
    pending = _Pending()
    pos = 0
    block = b""
    while pos + BLOCK <= len(chunk):
        block = chunk[pos : pos + BLOCK]
        pos += BLOCK
        if block[_TYPE] not in EXTENDED_TYPES:
            break
        size = min(_safe_size(block), MAX_EXTENDED_HEADER)
        with contextlib.suppress(FormatError):
            _apply_extended(block, chunk[pos : pos + size], pending)
        pos += round_up(size)
    if len(block) != BLOCK:
        return "", 0
    path = pending.path if pending.path is not None else _main_path(block)
    try:
        data_len = _data_len(block, pending)
    except FormatError:
        data_len = 0
    return normalize_path(path), data_len
