"""Exact gzip re-compression: split a .gz into header + content, and rebuild it.

Builder and device both compress with the zlib deltaport ships (``pinned_zlib``:
zlib 1.3.2 from cmeel-zlib), never the host's libz, at the level the builder
verified; the patch meta names that deflate (``pinned_zlib.VERSION``) and an applier
refuses any other, so a device never silently produces other bytes (the layer
digest would catch it anyway). Decompression uses Python's zlib: inflate output is
unique, whichever release runs it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from deltaport.delta import pinned_zlib

_FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 0x02, 0x04, 0x08, 0x10
LEVELS = (9, 6, 1, 2, 3, 4, 5, 7, 8)


def _header_length(data: bytes) -> int | None:
    if len(data) < 18 or data[:3] != b"\x1f\x8b\x08" or data[3] & 0xE0:
        return None
    flags = data[3]
    pos = 10
    if flags & _FEXTRA:
        if pos + 2 > len(data):
            return None
        pos += 2 + struct.unpack("<H", data[pos : pos + 2])[0]
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            end = data.find(b"\x00", pos)
            if end < 0:
                return None
            pos = end + 1
    if flags & _FHCRC:
        pos += 2
    return pos if pos <= len(data) - 8 else None


def gunzip_exact(data: bytes, max_size: int) -> bytes | None:
    """The content of a single-member gzip file, or None (not gzip, trailing data, too big)."""
    hlen = _header_length(data)
    if hlen is None:
        return None
    dec = zlib.decompressobj(-15)
    try:
        raw = dec.decompress(data[hlen:], max_size + 1)
    except zlib.error:
        return None
    if len(raw) > max_size or not dec.eof or len(dec.unused_data) != 8:
        return None
    crc, isize = struct.unpack("<II", dec.unused_data)
    if crc != zlib.crc32(raw) or isize != len(raw) & 0xFFFFFFFF:
        return None
    return raw


def gzip_member(header: bytes, raw: bytes, level: int) -> bytes:
    """header + raw deflate (pinned zlib) of raw at level + CRC32 + size: one gzip member.

    Raises:
        FormatError: level is not 0..9.
        InstallationError: the pinned zlib is missing or another release.
    """
    body = pinned_zlib.deflate_raw(raw, level)
    return header + body + struct.pack("<II", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)


@dataclass(frozen=True)
class GzipSplit:
    """A .gz file the pinned zlib reproduces exactly: its header, content and level."""

    header: bytes
    raw: bytes
    level: int


def split_gzip(data: bytes, max_size: int) -> GzipSplit | None:
    """Find the level at which the pinned zlib rebuilds data byte for byte, or None."""
    raw = gunzip_exact(data, max_size)
    if raw is None:
        return None
    hlen = _header_length(data)
    assert hlen is not None
    header = data[:hlen]
    for level in LEVELS:
        if gzip_member(header, raw, level) == data:
            return GzipSplit(header, raw, level)
    return None
