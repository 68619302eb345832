"""Small builders shared by the bundle tests: real bundles, and surgery on their bytes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deltaport.bundle import BundleInfo, BundleWriter
from deltaport.bundle.format import BLOCK_SIZE, BundleLimits
from deltaport.bundle.head import encode_head, required_head_bytes
from deltaport.bundle.signing import encode_signatures, sign_index
from deltaport.bundle.tarblocks import parse_size_field

SMALL_CHUNK = 4096

DEFAULT_MEMBERS: tuple[tuple[str, bytes], ...] = (
    ("config.json", b'{"architecture":"amd64"}'),
    ("empty", b""),
    ("layer-0.patch", bytes(range(256)) * 40),  # 10 240 bytes: spans three 4 KiB chunks
    ("notes.txt", b"hello bundle\n"),
)


def build_bundle(
    path: Path,
    members: Sequence[tuple[str, bytes]] = DEFAULT_MEMBERS,
    *,
    key: Ed25519PrivateKey | None = None,
    content: dict[str, Any] | None = None,
    chunk_size: int = SMALL_CHUNK,
) -> BundleInfo:
    """Write a real bundle with the given members through the public writer."""
    with BundleWriter(path, chunk_size=chunk_size) as writer:
        for name, data in members:
            writer.add_member(name, data)
        return writer.finish(content if content is not None else {"kind": "test"}, key)


def split_bundle(data: bytes) -> tuple[bytes, bytes, bytes]:
    """The raw index.json bytes, index.sig bytes and payload region of a bundle."""
    head_size = required_head_bytes(data, BundleLimits())
    index_size = parse_size_field(data[:BLOCK_SIZE])
    sig_at = BLOCK_SIZE + index_size + (-index_size % BLOCK_SIZE)
    sig_size = parse_size_field(data[sig_at : sig_at + BLOCK_SIZE])
    index = data[BLOCK_SIZE : BLOCK_SIZE + index_size]
    sig = data[sig_at + BLOCK_SIZE : sig_at + BLOCK_SIZE + sig_size]
    return index, sig, data[head_size:]


def reassemble(
    index: bytes, payload: bytes, *, key: Ed25519PrivateKey | None = None, sig: bytes | None = None
) -> bytes:
    """A bundle from parts: signs ``index`` with ``key`` unless ``sig`` bytes are given."""
    if sig is None:
        sig = encode_signatures([sign_index(index, key)] if key else [])
    return encode_head(index, sig) + payload
