"""Small builders shared by the bundle tests: real bundles, and surgery on their bytes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deltaport.bundle import BundleInfo, BundleWriter
from deltaport.bundle.format import HEAD_FIXED_SIZE, BundleLimits
from deltaport.bundle.head import (
    decode_index_bytes,
    encode_head,
    encode_index_bytes,
    required_head_bytes,
)
from deltaport.bundle.signing import encode_signatures, sign_index

SMALL_CHUNK = 4096
DELTAPORT = Path(sys.executable).parent / "deltaport"  # the installed console script


def deltaport_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``deltaport`` command, as a user would."""
    return subprocess.run(
        [str(DELTAPORT), *args], capture_output=True, text=True, timeout=120, check=False
    )

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


def split_stored(data: bytes) -> tuple[bytes, bytes, bytes]:
    """The stored (compressed) index bytes, signature bytes and payload of a bundle."""
    head_size = required_head_bytes(data, BundleLimits())
    index_size = int.from_bytes(data[12:16], "big")
    index_end = HEAD_FIXED_SIZE + index_size
    return data[HEAD_FIXED_SIZE:index_end], data[index_end:head_size], data[head_size:]


def split_bundle(data: bytes) -> tuple[bytes, bytes, bytes]:
    """The index JSON bytes (decompressed), signature bytes and payload of a bundle."""
    stored, sig, payload = split_stored(data)
    return decode_index_bytes(stored, BundleLimits()), sig, payload


def reassemble(
    index: bytes,
    payload: bytes,
    *,
    key: Ed25519PrivateKey | None = None,
    sig: bytes | None = None,
    stored: bool = False,
) -> bytes:
    """A bundle from index JSON (compressed here unless ``stored``) and payload.

    Signs the stored index with ``key`` unless ``sig`` bytes are given.
    """
    stored_index = index if stored else encode_index_bytes(index)
    if sig is None:
        sig = encode_signatures([sign_index(stored_index, key)] if key else [])
    return encode_head(stored_index, sig) + payload
