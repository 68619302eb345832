"""Constants, op codes and varints shared by the layer patch builder and applier.

One module, like containers/tar-diff's ``protocol`` package: the builder and the
applier must agree on every number here, and docs/patch-format.md specifies them.
"""

from __future__ import annotations

import enum
from typing import BinaryIO

from deltaport.errors import FormatError, TruncatedError

MAGIC = b"DPLP"
FORMAT_VERSION = 2  # 2: the xz section may be several concatenated .xz streams
# magic (4) + version (u16 BE) + meta length (u32 BE) + sha256 of everything after (32)
PREAMBLE_SIZE = 4 + 2 + 4 + 32

BLOCK = 512

# Section names (the order in which they appear after the meta document).
SECTION_HEADERS = "headers"
SECTION_OPS = "ops"
SECTION_LITERALS = "literals"
SECTION_ELF = "elf"
SECTION_DELTAS = "deltas"
SECTION_NAMES = (SECTION_HEADERS, SECTION_OPS, SECTION_LITERALS, SECTION_ELF, SECTION_DELTAS)

CODEC_ZSTD = "zstd"
CODEC_XZ = "xz"
CODEC_ZSTD_CHUNKS = "zstd-chunks"  # header section: chunks with per-chunk source dictionaries
CODECS = (CODEC_ZSTD, CODEC_XZ, CODEC_ZSTD_CHUNKS)

# Source-file references inside ops.
REF_SAME_PATH = 0  # the file with the current target entry's path in the source
REF_FILE_INDEX = 1  # the n-th regular file (tar order) of the source
REF_FILE_NEXT = 2  # file index = last index referenced in that source + 1 + zigzag delta


def zigzag(value: int) -> int:
    """Signed -> unsigned for varints: 0, -1, 1, -2 ... -> 0, 1, 2, 3 ..."""
    return value * 2 if value >= 0 else -value * 2 - 1


def unzigzag(value: int) -> int:
    """Inverse of zigzag."""
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


class Op(enum.IntEnum):
    """Op codes of the op stream (see docs/patch-format.md)."""

    END = 0x00
    HEADER = 0x01  # n: emit n header bytes (transformed tar header blocks); sets the entry
    RAW = 0x02  # n: emit n bytes of the header section verbatim
    ZEROS = 0x03  # n: emit n zero bytes
    PAD = 0x04  # emit the current entry's zero padding up to a 512-byte block
    LITERAL = 0x05  # n: emit n bytes of the literal section
    LITERAL_ELF = 0x06  # n: emit n bytes of the elf section
    COPY = 0x07  # ref: emit a whole source file
    DELTA = 0x08  # ref, old_off, old_len, new_len, delta: one segment from a source window
    GROUP = 0x09  # k, k*ref, new_len, delta: solid delta of several small files
    FROM_GROUP = 0x0A  # emit the current entry's size of bytes from the group output
    GZIP = 0x0B  # level, header, inner: re-gzip content rebuilt by the inner encoding


# gzip inner-content kinds for Op.GZIP
GZ_INNER_LITERAL = 0
GZ_INNER_DELTA = 1

# delta methods (first field of every delta payload)
DELTA_HDIFF = 0  # HDiffPatch, no inner compression (the deltas section is compressed)
DELTA_ZSTD = 1  # zstd frame with the old bytes as raw-content dictionary


def write_varint(buf: bytearray, value: int) -> None:
    """Append an unsigned LEB128 varint."""
    if value < 0:
        raise ValueError("varint must be non-negative")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            buf.append(byte | 0x80)
        else:
            buf.append(byte)
            return


MAX_VARINT_BYTES = 10


def read_varint(stream: BinaryIO) -> int:
    """Read an unsigned LEB128 varint of at most 10 bytes.

    Raises:
        TruncatedError: the stream ends inside the varint.
        FormatError: the varint is longer than 10 bytes.
    """
    result = 0
    for i in range(MAX_VARINT_BYTES):
        raw = stream.read(1)
        if not raw:
            raise TruncatedError("op stream ends inside a number")
        byte = raw[0]
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return result
    raise FormatError("op stream number is too long")
