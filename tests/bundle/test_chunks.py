"""Chunk digests as a downloader uses them, and the pure pieces they rest on."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from deltaport.bundle import (
    BundleLimits,
    BundleReader,
    PayloadVerifier,
    read_head,
    required_head_bytes,
    verify_chunk,
)
from deltaport.bundle.payload import ChunkHasher
from deltaport.errors import FormatError, IntegrityError, TruncatedError
from tests.bundle.helpers import SMALL_CHUNK, build_bundle

Bundle = tuple[bytes, Ed25519PrivateKey]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    path = tmp_path_factory.mktemp("chunks") / "c.bundle"
    varied = b"".join(hashlib.sha256(i.to_bytes(2, "big")).digest() for i in range(282))
    members = [("a", varied), ("b", b""), ("c", bytes(range(256)) * 30)]
    build_bundle(path, members, key=key, chunk_size=SMALL_CHUNK)
    return path.read_bytes(), key


def test_downloader_fetches_head_then_verified_chunks(bundle: Bundle) -> None:
    """What the transfer side does: head in <= 3 bounded fetches, then chunk by chunk."""
    data, key = bundle
    fetched = b""
    rounds = 0
    while (need := required_head_bytes(fetched)) > len(fetched):
        fetched = data[:need]  # an HTTP Range request for bytes [0, need)
        rounds += 1
    assert rounds <= 3
    index, signature, payload_offset = read_head(fetched, trusted_keys=[key.public_key()])
    assert payload_offset == len(fetched) == index.payload_offset
    assert signature.startswith(b'{"signatures"')
    rebuilt = bytearray(fetched)
    verifier = PayloadVerifier(index)
    for chunk_no in range(index.chunk_count):
        start, end = index.chunk_range(chunk_no)
        assert start == len(rebuilt)  # chunks tile the payload, in order
        verify_chunk(index, chunk_no, data[start:end])
        verifier.feed(data[start:end])
        rebuilt += data[start:end]
    verifier.finish()
    assert bytes(rebuilt) == data
    assert index.bundle_size == len(data)


def test_verify_chunk_rejects_wrong_short_long_and_missing_chunks(bundle: Bundle) -> None:
    data, _ = bundle
    index, _, _ = read_head(data)
    start, end = index.chunk_range(1)
    good = data[start:end]
    verify_chunk(index, 1, good)
    damaged = bytearray(good)
    damaged[5] ^= 1
    with pytest.raises(IntegrityError, match=r"chunk 1 .*member"):
        verify_chunk(index, 1, bytes(damaged))
    with pytest.raises(IntegrityError):
        verify_chunk(index, 0, good)  # right size, wrong place
    with pytest.raises(TruncatedError):
        verify_chunk(index, 1, good[:-1])
    with pytest.raises(IntegrityError):
        verify_chunk(index, 1, good + b"\x00")
    with pytest.raises(FormatError):
        verify_chunk(index, index.chunk_count, b"")
    with pytest.raises(FormatError):
        index.chunk_range(-1)


def test_last_chunk_is_short(bundle: Bundle) -> None:
    data, _ = bundle
    index, _, _ = read_head(data)
    start, end = index.chunk_range(index.chunk_count - 1)
    assert end == len(data)
    assert 0 < end - start <= index.chunk_size
    assert index.payload_size == sum(
        e - s for s, e in map(index.chunk_range, range(index.chunk_count))
    )


def test_payload_verifier_needs_every_chunk(bundle: Bundle) -> None:
    data, _ = bundle
    index, _, _ = read_head(data)
    verifier = PayloadVerifier(index)
    start, end = index.chunk_range(0)
    verifier.feed(data[start:end])
    with pytest.raises(TruncatedError):
        verifier.finish()


def test_members_in_range_names_a_members_chunks(bundle: Bundle) -> None:
    data, _ = bundle
    index, _, _ = read_head(data)
    a = index.member("a")
    assert index.members_in_range(a.offset, a.offset + 1) == ("a",)
    assert "c" in index.members_in_range(0, index.payload_size)


def test_default_chunk_size_is_one_mebibyte(tmp_path: Path) -> None:
    info = build_bundle(tmp_path / "d.bundle", [("x", b"x" * 3_000_000)], chunk_size=1 << 20)
    with BundleReader(info.path) as reader:
        assert reader.index.chunk_size == 1 << 20
        assert reader.index.chunk_count == 3
        reader.verify_all()


def test_required_head_bytes_limits(bundle: Bundle) -> None:
    data, _ = bundle
    with pytest.raises(FormatError, match="limit"):
        required_head_bytes(data[:20], BundleLimits(max_index_size=10))
    with pytest.raises(FormatError, match="not a deltaport bundle"):
        required_head_bytes(bytes(512))
    with pytest.raises(FormatError, match="not a deltaport bundle"):
        required_head_bytes(b"PK\x03")
    assert required_head_bytes(data[:5]) == 20
    head = required_head_bytes(data[:20])
    assert head > 20 and required_head_bytes(data[:head]) == head == read_head(data)[2]


@settings(max_examples=50, deadline=None)
@given(
    stream=st.binary(max_size=20_000),
    cuts=st.lists(st.integers(0, 20_000), max_size=8),
    chunk_size=st.sampled_from([4096, 5000, 8192]),
)
def test_chunk_hasher_matches_direct_hashing(
    stream: bytes, cuts: list[int], chunk_size: int
) -> None:
    hasher = ChunkHasher(chunk_size)
    bounds = sorted({0, len(stream), *[c for c in cuts if c <= len(stream)]})
    for a, b in itertools.pairwise(bounds):
        hasher.update(stream[a:b])
    expected = tuple(
        "sha256:" + hashlib.sha256(stream[i : i + chunk_size]).hexdigest()
        for i in range(0, len(stream), chunk_size)
    )
    assert hasher.finish() == expected
