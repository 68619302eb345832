"""The head of a bundle (fixed part, index, signatures): assembling and reading it, purely.

A downloader fetches the head first, checks it here, then fetches payload chunks and
checks each one with :func:`verify_chunk`. The reader uses the same functions on a
local file. Nothing here touches a file or a socket.

Reading order (docs/bundle-format.md, "Verification order"): the fixed head with
bounded sizes, then the signature document, then the signature over the stored index
bytes, and only then the index itself (decompressed within a limit, format version
first, then the schema).
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import zstandard

from deltaport.bundle.format import (
    FORMAT_VERSION,
    HEAD_FIXED_SIZE,
    KEY_LIST_FIELD,
    KEY_LIST_FORMAT_VERSION,
    MAGIC,
    MIN_FORMAT_VERSION,
    V1_PREFIX,
    BundleLimits,
)
from deltaport.bundle.index import BundleIndex, parse_index
from deltaport.bundle.signing import (
    Keyring,
    TrustedKeys,
    check_signatures,
    parse_signature_document,
    resolve_keys,
)
from deltaport.errors import (
    FormatError,
    IntegrityError,
    SignatureError,
    TruncatedError,
    UnsupportedVersionError,
    UsageError,
)

_FIXED = struct.Struct(">8sHHII")
INDEX_LEVEL = 19
"""zstd level of the stored index (a few KiB at most: the level costs nothing)."""


def encode_index_bytes(index_json: bytes) -> bytes:
    """The stored form of the index: one zstd frame of its canonical JSON, size in the header."""
    return zstandard.ZstdCompressor(level=INDEX_LEVEL, write_content_size=True).compress(
        index_json
    )


def decode_index_bytes(stored: bytes, limits: BundleLimits) -> bytes:
    """The index JSON from its stored form, refusing more than ``limits.max_index_size``.

    The frame must state its content size (the writer always does), so the limit is
    checked before anything is decompressed; zstd itself checks the stated size.

    Raises:
        FormatError: not exactly one complete zstd frame, or over the limit.
    """
    try:
        size = zstandard.get_frame_parameters(stored).content_size
        if size == zstandard.CONTENTSIZE_UNKNOWN or size > limits.max_index_size:
            raise FormatError(
                f"bundle index must state its size, at most {limits.max_index_size} bytes"
            )
        dobj = zstandard.ZstdDecompressor().decompressobj()
        data = dobj.decompress(stored)
    except zstandard.ZstdError as exc:
        raise FormatError(f"bundle index is not valid zstd data: {exc}") from exc
    if not dobj.eof or dobj.unused_data or len(data) != size:
        raise FormatError("bundle index is not exactly one complete zstd frame")
    return data


def encode_head(stored_index: bytes, signature_bytes: bytes) -> bytes:
    """The head: the fixed part, then the stored index, then the signature document."""
    return (
        _FIXED.pack(MAGIC, FORMAT_VERSION, 0, len(stored_index), len(signature_bytes))
        + stored_index
        + signature_bytes
    )


def _fixed_part(data: bytes, limits: BundleLimits) -> tuple[int, int, int]:
    """(format_version, index length, signature length) from the first 20 bytes.

    Raises:
        FormatError: not a deltaport bundle (or a version-1 one), flags set, over a limit.
        UnsupportedVersionError: a newer format version.
    """
    magic, version, flags, index_size, sig_size = _FIXED.unpack(data[:HEAD_FIXED_SIZE])
    if magic != MAGIC:
        if data.startswith(V1_PREFIX):
            raise FormatError(
                "this is a format-1 (tar) bundle; this deltaport reads format "
                f"{FORMAT_VERSION}: build the bundle again with this version"
            )
        raise FormatError("not a deltaport bundle (wrong magic bytes)")
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"bundle format version {version} is newer than this deltaport reads "
            f"(up to {FORMAT_VERSION}); upgrade deltaport to read it"
        )
    if version < MIN_FORMAT_VERSION:
        raise FormatError(f"bundle format version {version} is not one this deltaport reads")
    if flags:
        raise FormatError(f"bundle head has unknown flags {flags:#06x}")
    if not 0 < index_size <= limits.max_index_size:
        raise FormatError(
            f"bundle index is {index_size} bytes, the limit is 1 to {limits.max_index_size}"
        )
    if sig_size > limits.max_signature_size:
        raise FormatError(
            f"bundle signature document is {sig_size} bytes, over the limit of "
            f"{limits.max_signature_size}"
        )
    return version, index_size, sig_size


def required_head_bytes(data: bytes, limits: BundleLimits = BundleLimits()) -> int:
    """How many leading bytes of the bundle the head needs, judging from ``data``.

    Call with what you have; while the answer exceeds ``len(data)``, fetch up to the
    answer and call again (at most two rounds). When it does not exceed
    ``len(data)``, it is the payload offset: the exact length of the head.

    Raises:
        FormatError: the bytes so far are not the head of a bundle, or a head part is
            larger than its limit.
        UnsupportedVersionError: the fixed head states a newer format version.
    """
    if len(data) < HEAD_FIXED_SIZE:
        if data and not (MAGIC.startswith(data[:8]) or V1_PREFIX.startswith(data[:11])):
            raise FormatError("not a deltaport bundle (wrong magic bytes)")
        return HEAD_FIXED_SIZE
    _, index_size, sig_size = _fixed_part(data, limits)
    return HEAD_FIXED_SIZE + index_size + sig_size


def _split_head(data: bytes, limits: BundleLimits) -> tuple[int, bytes, bytes, int]:
    """Format version, stored index bytes, signature bytes and the payload offset."""
    head_size = required_head_bytes(data, limits)
    if len(data) < head_size:
        raise TruncatedError(f"bundle ends after {len(data)} bytes, its head needs {head_size}")
    version, index_size, _ = _fixed_part(data, limits)
    index_end = HEAD_FIXED_SIZE + index_size
    return version, data[HEAD_FIXED_SIZE:index_end], data[index_end:head_size], head_size


def read_head(
    data: bytes,
    *,
    trusted_keys: TrustedKeys | None = None,
    require_signature: bool | None = None,
    limits: BundleLimits = BundleLimits(),
) -> tuple[BundleIndex, bytes, int]:
    """Parse and check a bundle head: the index, the raw signature bytes, the payload offset.

    ``data`` may hold more than the head (the whole file, say). With ``trusted_keys``
    the signature is checked before the index is even decompressed; ``require_signature``
    defaults to True exactly when trusted keys are given (see :func:`check_signatures`
    for what False means with keys). A :class:`~deltaport.bundle.signing.Keyring`
    chooses the keys from the key list the signature document carries (format 4).

    Raises:
        TruncatedError: ``data`` ends before the head does.
        SignatureError: unsigned, wrongly signed, or not signed by a trusted key.
        UnsupportedVersionError: a newer format version.
        FormatError: anything else malformed.
        UsageError: a signature is required but no trusted keys were given.
    """
    given = isinstance(trusted_keys, Keyring) or bool(trusted_keys)
    required = given if require_signature is None else require_signature
    if required and not given:
        raise UsageError("a bundle signature is required, but no trusted keys were given")
    version, index_bytes, signature_bytes, payload_offset = _split_head(data, limits)
    document = parse_signature_document(signature_bytes, limits)
    if document.key_list is not None and version < KEY_LIST_FORMAT_VERSION:
        raise SignatureError(f"a format-{version} bundle may not carry a {KEY_LIST_FIELD} "
                             f"(format {KEY_LIST_FORMAT_VERSION} and later)")
    signer = domain = None
    if trusted_keys is not None and given:
        resolved = resolve_keys(trusted_keys, document.key_list)
        if resolved.keys or required:
            signer = check_signatures(
                index_bytes, document.entries, list(resolved.keys), require_signature=required,
                explain=resolved.explain if isinstance(trusted_keys, Keyring) else None)
        domain = resolved.domain if signer in resolved.certified else None
    index = parse_index(
        decode_index_bytes(index_bytes, limits),
        payload_offset=payload_offset,
        index_digest="sha256:" + hashlib.sha256(index_bytes).hexdigest(),
        signer_key_id=signer,
        limits=limits,
    )
    if domain is not None:
        index = dataclasses.replace(index, trust_domain=domain)
    return index, signature_bytes, payload_offset


def verify_chunk(index: BundleIndex, chunk_no: int, data: bytes) -> None:
    """Check one payload chunk, as fetched from ``index.chunk_range(chunk_no)``.

    Raises:
        TruncatedError: ``data`` is shorter than the chunk.
        IntegrityError: ``data`` is longer, or does not hash to the chunk's digest.
        FormatError: no such chunk.
    """
    start, end = index.chunk_range(chunk_no)
    if len(data) < end - start:
        raise TruncatedError(
            f"bundle chunk {chunk_no} has {len(data)} bytes, it should have {end - start}"
        )
    if len(data) > end - start:
        raise IntegrityError(
            f"bundle chunk {chunk_no} has {len(data)} bytes, it should have {end - start}"
        )
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != index.chunk_digests[chunk_no]:
        rel = start - index.payload_offset
        members = index.members_in_range(rel, rel + len(data))
        holds = f"; it holds member(s) {', '.join(members)}" if members else ""
        raise IntegrityError(
            f"bundle chunk {chunk_no} of {index.chunk_count} (bytes {start}-{end}) "
            f"does not match its digest{holds}"
        )
