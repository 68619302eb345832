"""The head of a bundle (index.json + index.sig): assembling it and reading it, purely.

A downloader fetches the head first, checks it here, then fetches payload chunks and
checks each one with :func:`verify_chunk`. The reader uses the same functions on a
local file. Nothing here touches a file or a socket.

Reading order (docs/bundle-format.md, "Verification order"): tar framing of the head
with bounded sizes, then index.sig, then the signature over the raw index.json bytes,
and only then the JSON of the index (format version first, then the schema).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from deltaport.bundle.format import (
    BLOCK_SIZE,
    INDEX_NAME,
    SIGNATURE_NAME,
    BundleLimits,
    pad_length,
)
from deltaport.bundle.index import BundleIndex, parse_index
from deltaport.bundle.signing import check_signatures, parse_signatures
from deltaport.bundle.tarblocks import expect_head_header, ustar_block
from deltaport.errors import FormatError, IntegrityError, TruncatedError, UsageError


def encode_head(index_bytes: bytes, signature_bytes: bytes) -> bytes:
    """The head: tar member index.json then tar member index.sig, each block-padded."""
    return b"".join(
        (
            ustar_block(INDEX_NAME.encode(), len(index_bytes)),
            index_bytes,
            bytes(pad_length(len(index_bytes))),
            ustar_block(SIGNATURE_NAME.encode(), len(signature_bytes)),
            signature_bytes,
            bytes(pad_length(len(signature_bytes))),
        )
    )


def _signature_header_offset(index_size: int) -> int:
    return BLOCK_SIZE + index_size + pad_length(index_size)


def required_head_bytes(data: bytes, limits: BundleLimits = BundleLimits()) -> int:
    """How many leading bytes of the bundle the head needs, judging from ``data``.

    Call with what you have; while the answer exceeds ``len(data)``, fetch up to the
    answer and call again (at most three rounds). When it does not exceed
    ``len(data)``, it is the payload offset: the exact length of the head.

    Raises:
        FormatError: the bytes so far are not the head of a bundle, or a head member
            is larger than its limit.
    """
    if len(data) < BLOCK_SIZE:
        return BLOCK_SIZE
    index_size = expect_head_header(data[:BLOCK_SIZE], INDEX_NAME, limits.max_index_size)
    sig_at = _signature_header_offset(index_size)
    if len(data) < sig_at + BLOCK_SIZE:
        return sig_at + BLOCK_SIZE
    sig_size = expect_head_header(
        data[sig_at : sig_at + BLOCK_SIZE], SIGNATURE_NAME, limits.max_signature_size
    )
    return sig_at + BLOCK_SIZE + sig_size + pad_length(sig_size)


def _split_head(data: bytes, limits: BundleLimits) -> tuple[bytes, bytes, int]:
    """index.json bytes, index.sig bytes and the payload offset; padding must be zero."""
    head_size = required_head_bytes(data, limits)
    if len(data) < head_size:
        raise TruncatedError(f"bundle ends after {len(data)} bytes, its head needs {head_size}")
    index_size = expect_head_header(data[:BLOCK_SIZE], INDEX_NAME, limits.max_index_size)
    sig_at = _signature_header_offset(index_size)
    sig_size = expect_head_header(
        data[sig_at : sig_at + BLOCK_SIZE], SIGNATURE_NAME, limits.max_signature_size
    )
    index_bytes = data[BLOCK_SIZE : BLOCK_SIZE + index_size]
    sig_start = sig_at + BLOCK_SIZE
    signature_bytes = data[sig_start : sig_start + sig_size]
    index_padding = data[BLOCK_SIZE + index_size : sig_at]
    sig_padding = data[sig_start + sig_size : head_size]
    if index_padding.strip(b"\x00") or sig_padding.strip(b"\x00"):
        raise FormatError("bundle head has non-zero tar padding")
    return index_bytes, signature_bytes, head_size


def read_head(
    data: bytes,
    *,
    trusted_keys: Sequence[Ed25519PublicKey] | None = None,
    require_signature: bool | None = None,
    limits: BundleLimits = BundleLimits(),
) -> tuple[BundleIndex, bytes, int]:
    """Parse and check a bundle head: the index, the raw index.sig bytes, the payload offset.

    ``data`` may hold more than the head (the whole file, say). With ``trusted_keys``
    the signature is checked before the index JSON is even parsed; ``require_signature``
    defaults to True exactly when trusted keys are given (see :func:`check_signatures`
    for what False means with keys).

    Raises:
        TruncatedError: ``data`` ends before the head does.
        SignatureError: unsigned, wrongly signed, or not signed by a trusted key.
        UnsupportedVersionError: a newer format version.
        FormatError: anything else malformed.
        UsageError: a signature is required but no trusted keys were given.
    """
    keys = list(trusted_keys or [])
    required = bool(keys) if require_signature is None else require_signature
    if required and not keys:
        raise UsageError("a bundle signature is required, but no trusted keys were given")
    index_bytes, signature_bytes, payload_offset = _split_head(data, limits)
    entries = parse_signatures(signature_bytes, limits)
    signer = (
        check_signatures(index_bytes, entries, keys, require_signature=required) if keys else None
    )
    index = parse_index(
        index_bytes,
        payload_offset=payload_offset,
        index_digest="sha256:" + hashlib.sha256(index_bytes).hexdigest(),
        signer_key_id=signer,
        limits=limits,
    )
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
