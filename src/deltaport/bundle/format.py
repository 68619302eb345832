"""Constants and limits of the bundle file format, shared by the writer and the reader.

The format is specified in ``docs/bundle-format.md``; every number that document names
lives here, so the builder and the device can never disagree about it (the habit of
containers/tar-diff's ``protocol`` package). Nothing in this module does I/O.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

FORMAT_VERSION = 4
"""The bundle format version this code writes.

Version 1 was a tar archive; version 2 drops the tar framing (3-4 KiB of headers,
padding and end-of-archive blocks per bundle, more than a small update's patches).
Version 3 adds the optional signed ``release`` (version and expiry, against replay).
Version 4 adds the optional root-signed ``key_list`` to the signature document
(docs/trust.md), so signing keys can be rotated without touching the device.
"""

KEY_LIST_FORMAT_VERSION = 4
"""The first format whose signature document may carry ``key_list``."""

KEY_LIST_FIELD = "key_list"
"""The signature document field holding the key list envelope (format 4)."""

MIN_FORMAT_VERSION = 2
"""The oldest format version this code reads (2: the same layout, without ``release``)."""

MAGIC = b"\x89DPB\r\n\x1a\n"
"""First 8 bytes of every bundle (PNG-style: catches 7-bit and newline-mangling copies)."""

HEAD_FIXED_SIZE = 20
"""magic (8) + format_version (u16) + flags (u16, zero) + index length (u32) + sig length (u32)."""

RESERVED_NAMES = frozenset({"index.json", "index.sig"})
"""Names a member may not take (they would clash with the head when a bundle is unpacked)."""

V1_PREFIX = b"index.json\x00"
"""How a version-1 (tar) bundle starts: recognised only to say so clearly."""

SIGNING_CONTEXT = b"deltaport-bundle-index\x00"
"""Prefixed to the exact stored index bytes to form the Ed25519 signing input.

It separates bundle signatures from anything else the same key might sign. The fixed
head and this signing input are frozen across format versions, so that any reader can
check a signature, then refuse a newer format by the version the signed index states.
"""

DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 4 << 10
MAX_CHUNK_SIZE = 64 << 20

MAX_NAME_LENGTH = 100
"""Member names are short, portable identifiers (one path component when extracted)."""

MAX_MEDIA_TYPE_LENGTH = 255

MEMBER_NAME_RE = re.compile(r"[A-Za-z0-9_+=@:,-][A-Za-z0-9._+=@:,-]*")
"""Portable member names: no '/', no leading '.', no NUL, no spaces or non-ASCII."""

MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
"""An RFC 6838 ``type/subtype`` without parameters."""

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
KEY_ID_RE = re.compile(r"ed25519:[0-9a-f]{32}")

INDEX_FIELDS = frozenset(
    {"format_version", "chunk_size", "payload_size", "chunk_digests", "members", "content"}
)
OPTIONAL_INDEX_FIELDS = frozenset({"release"})
"""Top-level index fields a version-3 index may carry (a version-2 index may not)."""
RELEASE_FIELDS = frozenset({"version", "expires_at"})
MAX_RELEASE_VERSION = (1 << 53) - 1
"""Release versions stay exact in every JSON parser (IEEE doubles)."""
MAX_EXPIRES_AT = 253402300799
"""9999-12-31T23:59:59Z: the last second a release may expire at (Unix seconds)."""
MEMBER_FIELDS = frozenset({"name", "offset", "size", "digest", "media_type"})
SIGNATURE_FIELDS = frozenset({"key_id", "signature"})


@dataclass(frozen=True)
class BundleLimits:
    """Bounds a reader enforces on untrusted bundles (the writer never exceeds them).

    Every read of bundle bytes is bounded by one of these before it happens, so a
    hostile or corrupt file cannot make the reader allocate or loop without end.
    """

    max_index_size: int = 16 << 20  # bytes of the index, stored and decompressed
    max_signature_size: int = 64 << 10  # bytes of the signature document
    max_signatures: int = 16  # entries in the signature document
    max_members: int = 10_000
    max_member_name_length: int = MAX_NAME_LENGTH  # never more than MAX_NAME_LENGTH
    max_chunk_size: int = MAX_CHUNK_SIZE  # one chunk is held in memory while verified
    max_bundle_size: int = 1 << 40  # bytes of the whole file


def sha256_digest(data: bytes | bytearray | memoryview) -> str:
    """``sha256:<hex>`` of ``data``, the digest notation used throughout the index."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chunk_count(payload_size: int, chunk_size: int) -> int:
    """Number of fixed-size chunks (the last one may be short) covering the payload."""
    return -(-payload_size // chunk_size)


def member_name_problem(name: str, max_length: int = MAX_NAME_LENGTH) -> str | None:
    """Why ``name`` cannot be a member name, or None if it can.

    Names become file names when ``deltaport bundle extract`` unpacks a bundle, so they
    are restricted to one path component of portable characters.
    """
    if not name:
        return "empty name"
    if len(name) > min(max_length, MAX_NAME_LENGTH):
        return f"longer than {min(max_length, MAX_NAME_LENGTH)} characters"
    if name in RESERVED_NAMES:
        return "reserved for the bundle index"
    if ".." in name:
        return "contains '..'"
    if not MEMBER_NAME_RE.fullmatch(name):
        return "only A-Z a-z 0-9 and ._+=@:,- are allowed, and no leading '.'"
    return None


def media_type_problem(media_type: str) -> str | None:
    """Why ``media_type`` is not an acceptable member media type, or None."""
    if len(media_type) > MAX_MEDIA_TYPE_LENGTH:
        return f"longer than {MAX_MEDIA_TYPE_LENGTH} characters"
    if not MEDIA_TYPE_RE.fullmatch(media_type):
        return "not of the form type/subtype"
    return None
