"""Pure encoding and checking of the tar blocks that frame a bundle.

A bundle is a POSIX tar archive with fixed, canonical headers (mode 0644, owner 0/0,
mtime 0, no user or group names), so the framing of a member follows from its name
and size alone. The reader therefore checks a header by re-encoding it and comparing
bytes instead of interpreting every field. Members larger than the ustar size field
can hold (8 GiB - 1) get a PAX extended header carrying ``size``.
"""

from __future__ import annotations

from deltaport.bundle.format import BLOCK_SIZE, pad_length
from deltaport.errors import FormatError

USTAR_MAX_SIZE = 8**11 - 1
"""Largest size the 11 octal digits of the ustar size field can hold."""

_PAX_PREFIX = b"PaxHeaders/"


def _octal(value: int, width: int) -> bytes:
    """``width - 1`` zero-padded octal digits followed by NUL (a ustar numeric field)."""
    return b"%0*o\x00" % (width - 1, value)


def ustar_block(name: bytes, size: int, typeflag: bytes = b"0") -> bytes:
    """One canonical ustar header block for a regular file (or a PAX ``x`` header)."""
    block = bytearray(BLOCK_SIZE)
    block[0 : len(name)] = name
    block[100:108] = _octal(0o644, 8)
    block[108:116] = _octal(0, 8)
    block[116:124] = _octal(0, 8)
    block[124:136] = _octal(size, 12)
    block[136:148] = _octal(0, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[257:263] = b"ustar\x00"
    block[263:265] = b"00"
    block[329:337] = _octal(0, 8)
    block[337:345] = _octal(0, 8)
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def _pax_size_record(size: int) -> bytes:
    """The PAX record ``"<len> size=<size>\\n"`` whose length prefix counts itself."""
    body = b" size=%d\n" % size
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length += 1
    return b"%d" % length + body


def member_header(name: str, size: int) -> bytes:
    """The tar blocks that precede a member's data: ustar, or PAX ``x`` + ustar if huge."""
    raw = name.encode("ascii")
    if size <= USTAR_MAX_SIZE:
        return ustar_block(raw, size)
    record = _pax_size_record(size)
    pax = ustar_block((_PAX_PREFIX + raw)[:100], len(record), b"x")
    return pax + record + bytes(pad_length(len(record))) + ustar_block(raw, 0)


def member_header_length(name: str, size: int) -> int:
    """Length of :func:`member_header` without building it."""
    if size <= USTAR_MAX_SIZE:
        return BLOCK_SIZE
    return 3 * BLOCK_SIZE  # a size record is always well under one block


def parse_size_field(block: bytes) -> int:
    """The size in a canonical ustar header block (11 octal digits and a NUL).

    Raises:
        FormatError: the field is not in canonical form.
    """
    field = block[124:136]
    digits = field[:11]
    if len(field) != 12 or field[11] != 0 or digits.strip(b"01234567"):
        raise FormatError("tar header size field is not canonical octal")
    return int(digits, 8)


def expect_head_header(block: bytes, name: str, max_size: int) -> int:
    """Check that ``block`` is the canonical header of head member ``name``; its size.

    Raises:
        FormatError: not a deltaport bundle, a non-canonical header, or a size over
            ``max_size``.
    """
    if block[257:263] != b"ustar\x00" or block[:100].rstrip(b"\x00") != name.encode():
        raise FormatError(f"not a deltaport bundle: expected tar member {name!r} here")
    size = parse_size_field(block)
    if size > max_size:
        raise FormatError(f"bundle {name} is {size} bytes, over the limit of {max_size}")
    if block != ustar_block(name.encode(), size):
        raise FormatError(f"bundle {name} tar header is not canonical")
    return size
