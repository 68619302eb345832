"""The signed release (version, expiry) of format 3, and format-2 bundles without it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deltaport.bundle import FORMAT_VERSION, BundleReader, BundleWriter, Release
from deltaport.errors import FormatError
from tests.bundle.helpers import DEFAULT_MEMBERS, reassemble, split_bundle


def _write(path: Path, key: Ed25519PrivateKey, release: Release | None) -> None:
    with BundleWriter(path) as writer:
        for name, data in DEFAULT_MEMBERS:
            writer.add_member(name, data)
        writer.finish({"kind": "test"}, key, release)


def _resign(path: Path, key: Ed25519PrivateKey, document: dict[str, Any],
            head_version: int = FORMAT_VERSION) -> None:
    _, _, payload = split_bundle(path.read_bytes())
    data = bytearray(reassemble(json.dumps(document).encode(), payload, key=key))
    data[8:10] = head_version.to_bytes(2, "big")
    path.write_bytes(bytes(data))


def test_release_is_signed_and_read_back(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "r.bundle"
    _write(path, key, Release(7, 2_000_000_000))
    with BundleReader(path, trusted_keys=[key.public_key()]) as reader:
        assert reader.index.format_version == FORMAT_VERSION == 4
        assert reader.index.release == Release(7, 2_000_000_000)
        reader.verify_all()


def test_release_cannot_be_changed_without_the_key(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "r.bundle"
    _write(path, key, Release(1, 2_000_000_000))
    index, sig, payload = split_bundle(path.read_bytes())
    document = json.loads(index)
    document["release"]["version"] = 99
    path.write_bytes(reassemble(json.dumps(document).encode(), payload, sig=sig))
    from deltaport.errors import SignatureError

    with pytest.raises(SignatureError):
        BundleReader(path, trusted_keys=[key.public_key()])


def test_a_format_2_bundle_without_release_is_read_with_none(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "old.bundle"
    _write(path, key, None)
    document = json.loads(split_bundle(path.read_bytes())[0])
    document["format_version"] = 2
    _resign(path, key, document, head_version=2)
    with BundleReader(path, trusted_keys=[key.public_key()]) as reader:
        assert reader.index.format_version == 2 and reader.index.release is None
        reader.verify_all()


def test_a_format_2_index_may_not_carry_a_release(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "old.bundle"
    _write(path, key, Release(1, 2_000_000_000))
    document = json.loads(split_bundle(path.read_bytes())[0])
    document["format_version"] = 2
    _resign(path, key, document, head_version=2)
    with pytest.raises(FormatError, match="unknown \\['release'\\]"):
        BundleReader(path, trusted_keys=[key.public_key()])


@pytest.mark.parametrize("release", [
    {"version": 0, "expires_at": 1},
    {"version": True, "expires_at": 1},
    {"version": 1.0, "expires_at": 1},
    {"version": 1 << 53, "expires_at": 1},
    {"version": 1, "expires_at": -1},
    {"version": 1, "expires_at": "2030-01-01T00:00:00Z"},
    {"version": 1, "expires_at": 253402300800},
    {"version": 1},
    {"version": 1, "expires_at": 1, "signer": "me"},
    [1, 1],
    None,
])
def test_malformed_release_is_refused(tmp_path: Path, release: object) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "bad.bundle"
    _write(path, key, Release(1, 2_000_000_000))
    document = json.loads(split_bundle(path.read_bytes())[0])
    document["release"] = release
    _resign(path, key, document)
    with pytest.raises(FormatError, match="release"):
        BundleReader(path, trusted_keys=[key.public_key()])


def test_release_values_are_bounded_when_built() -> None:
    with pytest.raises(FormatError):
        Release(0, 1)
    with pytest.raises(FormatError):
        Release(1, -5)
