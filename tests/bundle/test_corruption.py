"""Hostile and damaged bundles: every byte flipped, every truncation, random mutations.

The reader must answer each with a DeltaportError subclass - never another exception -
and, for a signed bundle read with its key, must notice every single-byte change.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltaport.bundle import BundleReader, read_head
from deltaport.errors import DeltaportError, FormatError, IntegrityError, TruncatedError
from tests.bundle.helpers import build_bundle, split_bundle

SMALL_MEMBERS = (
    ("config.json", b'{"a":1}'),
    ("empty", b""),
    ("blob", bytes(range(251)) * 10 + b"tail"),  # 2514 bytes; the payload is two 4 KiB chunks
)

KEY = Ed25519PrivateKey.generate()


def _read_everything(path: Path, *, trusted: bool) -> None:
    keys = [KEY.public_key()] if trusted else None
    with BundleReader(path, trusted_keys=keys) as reader:
        reader.verify_all()
        for member in reader.index.members:
            with reader.open_member(member.name) as stream:
                while stream.read(1 << 16):
                    pass


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("small") / "small.bundle"
    build_bundle(path, SMALL_MEMBERS, key=KEY)
    return path.read_bytes()


def _flip_in_place(path: Path, position: int, mask: int) -> None:
    """XOR one byte of the file, without rewriting it (fast: no truncate-and-write)."""
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ mask]))


def test_every_single_byte_flip_is_detected_with_trusted_key(
    small_bundle: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "flip.bundle"
    path.write_bytes(small_bundle)
    for position in range(len(small_bundle)):
        _flip_in_place(path, position, 0x20)
        with pytest.raises(DeltaportError) as caught:
            _read_everything(path, trusted=True)
        assert isinstance(caught.value, FormatError | IntegrityError), position
        _flip_in_place(path, position, 0x20)
    assert path.read_bytes() == small_bundle


def test_every_payload_byte_flip_is_detected_without_keys(
    small_bundle: bytes, tmp_path: Path
) -> None:
    """Unsigned reading can't protect the index, but the index protects the payload."""
    _, _, payload = split_bundle(small_bundle)
    payload_offset = len(small_bundle) - len(payload)
    path = tmp_path / "flip.bundle"
    path.write_bytes(small_bundle)
    for position in range(len(small_bundle)):
        _flip_in_place(path, position, 0x01)
        try:
            _read_everything(path, trusted=False)
        except DeltaportError:
            pass
        else:
            assert position < payload_offset, f"payload flip at {position} went unnoticed"
        _flip_in_place(path, position, 0x01)


def test_every_truncation_is_truncated_or_integrity_error(
    small_bundle: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "cut.bundle"
    path.write_bytes(small_bundle)
    for length in reversed(range(len(small_bundle))):
        os.truncate(path, length)  # shrink step by step: no rewrite per case
        for trusted in (True, False) if length % 3 == 0 else (True,):
            with pytest.raises(DeltaportError) as caught:
                _read_everything(path, trusted=trusted)
            assert isinstance(caught.value, TruncatedError | IntegrityError), (length, caught)


def test_trailing_bytes_are_refused(small_bundle: bytes, tmp_path: Path) -> None:
    path = tmp_path / "long.bundle"
    path.write_bytes(small_bundle + b"\x00")
    with pytest.raises(FormatError, match="after its end"):
        BundleReader(path)


def test_truncated_after_open_is_truncated_error(small_bundle: bytes, tmp_path: Path) -> None:
    """A file cut while a reader holds it open (a transfer tool rewriting it)."""
    path = tmp_path / "shrinks.bundle"
    path.write_bytes(small_bundle)
    with BundleReader(path) as reader:
        with open(path, "r+b") as f:
            f.truncate(len(small_bundle) - 2000)
        with pytest.raises(TruncatedError):
            reader.verify_all()
        with pytest.raises(TruncatedError, match="blob"), reader.open_member("blob") as s:
            s.read()


def test_member_stream_detects_corruption_at_eof(small_bundle: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad.bundle"
    path.write_bytes(small_bundle)
    with BundleReader(path) as reader:
        member = reader.index.member("blob")
        at = reader.index.payload_offset + member.offset + 100
    damaged = bytearray(small_bundle)
    damaged[at] ^= 0xFF
    path.write_bytes(damaged)
    with BundleReader(path, trusted_keys=[KEY.public_key()]) as reader:
        with pytest.raises(IntegrityError, match="'blob'"), reader.open_member("blob") as stream:
            while stream.read(50):
                pass
        with pytest.raises(IntegrityError, match="blob"):
            reader.verify_all()
        with reader.open_member("config.json") as stream:  # other members stay readable
            assert stream.read() == b'{"a":1}'


_members = st.lists(
    st.tuples(
        st.text(alphabet="abcxyz019-_", min_size=1, max_size=12),
        st.binary(max_size=9000),
    ),
    max_size=4,
    unique_by=lambda m: m[0],
)
_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(min_value=0), st.just(0)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.integers(0, 255)),
)


def _mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, where, value in mutations:
        at = where % (len(out) + 1)
        if kind == "flip" and at < len(out):
            out[at] ^= value
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = bytes([value])
    return bytes(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    members=_members,
    signed=st.booleans(),
    trusted=st.booleans(),
    mutations=st.lists(_mutation, min_size=1, max_size=3),
)
def test_random_bundles_with_random_damage_never_crash(
    members: list[tuple[str, bytes]],
    signed: bool,
    trusted: bool,
    mutations: list[tuple[str, int, int]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "h.bundle"
        build_bundle(path, members, key=KEY if signed else None)
        original = path.read_bytes()
        _read_everything(path, trusted=signed and trusted)  # the undamaged one reads
        damaged = _mutate(original, mutations)
        path.write_bytes(damaged)
        try:
            _read_everything(path, trusted=trusted)
        except DeltaportError:
            return
        assert not trusted or damaged == original, "a damaged signed bundle was accepted"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_read_head_on_arbitrary_bytes_only_raises_deltaport_errors(data: bytes) -> None:
    with contextlib.suppress(DeltaportError):
        read_head(data)


@settings(max_examples=100, deadline=None)
@given(cut=st.integers(min_value=0, max_value=8192), noise=st.binary(max_size=64))
def test_read_head_on_damaged_heads(small_bundle: bytes, cut: int, noise: bytes) -> None:
    data = small_bundle[:cut] + noise
    with contextlib.suppress(DeltaportError):
        read_head(data, trusted_keys=[KEY.public_key()])
