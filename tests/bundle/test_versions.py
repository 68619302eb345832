"""Format versions and the strict schema of index.json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deltaport.bundle import FORMAT_VERSION, BundleLimits, BundleReader, read_head
from deltaport.errors import FormatError, UnsupportedVersionError
from tests.bundle.helpers import build_bundle, reassemble, split_bundle

Edit = Callable[[dict[str, Any]], object]


def _rewrite(path: Path, key: Ed25519PrivateKey | None, edit: Edit) -> None:
    """Change the index JSON, then re-sign it with ``key`` (a legitimate signer)."""
    index, _, payload = split_bundle(path.read_bytes())
    document = json.loads(index)
    edit(document)
    path.write_bytes(reassemble(json.dumps(document).encode(), payload, key=key))


def test_newer_version_resigned_is_unsupported(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "v2.bundle"
    build_bundle(path, key=key)
    _rewrite(path, key, lambda d: d.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(UnsupportedVersionError, match="upgrade"):
        BundleReader(path, trusted_keys=[key.public_key()])
    with pytest.raises(UnsupportedVersionError):
        BundleReader(path)


def test_newer_version_with_a_different_schema_is_still_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "v9.bundle"
    build_bundle(path)

    def future(d: dict[str, Any]) -> None:
        d.clear()
        d.update(format_version=9, something="new")

    _rewrite(path, None, future)
    with pytest.raises(UnsupportedVersionError):
        BundleReader(path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(format_version=0), "version"),
        (lambda d: d.update(format_version="1"), "format_version"),
        (lambda d: d.update(format_version=True), "format_version"),
        (lambda d: d.update(extra=1), "unknown"),
        (lambda d: d.pop("content"), "missing"),
        (lambda d: d.update(content=[]), "content"),
        (lambda d: d.update(chunk_size=100), "chunk_size"),
        (lambda d: d.update(payload_size=d["payload_size"] + 512), "payload_size"),
        (lambda d: d["chunk_digests"].pop(), "chunk digests"),
        (lambda d: d["chunk_digests"].__setitem__(0, "md5:00"), "chunk digest"),
        (lambda d: d["members"][1].update(offset=d["members"][1]["offset"] + 512), "offset"),
        (lambda d: d["members"][1].update(size=-1), "size"),
        (lambda d: d["members"][1].update(name="../etc/passwd"), "name"),
        (lambda d: d["members"][1].update(name=d["members"][0]["name"]), "same name"),
        (lambda d: d["members"][0].update(digest="sha256:XYZ"), "digest"),
        (lambda d: d["members"][0].update(media_type="x"), "media type"),
        (lambda d: d["members"][0].update(extra=1), "unknown"),
        (lambda d: d.update(members={}), "list"),
    ],
)
def test_malformed_index_is_format_error(tmp_path: Path, edit: Edit, match: str) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "m.bundle"
    build_bundle(path, key=key)
    _rewrite(path, key, edit)
    with pytest.raises(FormatError, match=match) as caught:
        BundleReader(path, trusted_keys=[key.public_key()])
    assert not isinstance(caught.value, UnsupportedVersionError)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"format_version":1,"format_version":1}',
        b'{"format_version":NaN}',
        b"[" * 100_000,
        b"\xff\xfe",
        b"[]",
        b"",
    ],
)
def test_hostile_index_json_is_format_error(tmp_path: Path, raw: bytes) -> None:
    build_bundle(tmp_path / "b.bundle")
    _, _, payload = split_bundle((tmp_path / "b.bundle").read_bytes())
    with pytest.raises(FormatError):
        read_head(reassemble(raw, payload))


def test_limits_are_enforced(tmp_path: Path) -> None:
    path = tmp_path / "b.bundle"
    build_bundle(path, [(f"m{i}", b"x") for i in range(5)])
    with pytest.raises(FormatError, match="limit"):
        BundleReader(path, limits=BundleLimits(max_members=4))
    with pytest.raises(FormatError, match="limit"):
        BundleReader(path, limits=BundleLimits(max_index_size=100))
    with pytest.raises(FormatError, match="limit"):
        BundleReader(path, limits=BundleLimits(max_signature_size=10))
    with pytest.raises(FormatError):
        BundleReader(path, limits=BundleLimits(max_member_name_length=1))
    with BundleReader(path, limits=BundleLimits(max_members=5)) as reader:
        reader.verify_all()


def test_not_a_bundle(tmp_path: Path) -> None:
    path = tmp_path / "plain.tar"
    import tarfile

    src = tmp_path / "file.txt"
    src.write_text("hi")
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.add(src, arcname="file.txt")
    with pytest.raises(FormatError, match="not a deltaport bundle"):
        BundleReader(path)


def _frame_without_size(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(write_content_size=False).compress(data)


@pytest.mark.parametrize(
    ("stored", "match"),
    [
        (b"{}", "zstd"),  # plain JSON, not compressed
        (b"", "limit is 1"),
        (None, "one complete zstd frame"),  # a good frame with a byte after it
        ("nosize", "state its size"),
        ("toobig", "state its size"),
    ],
)
def test_stored_index_must_be_one_bounded_zstd_frame(
    tmp_path: Path, stored: bytes | str | None, match: str
) -> None:
    from deltaport.bundle.head import encode_index_bytes

    path = tmp_path / "b.bundle"
    build_bundle(path)
    index, _, payload = split_bundle(path.read_bytes())
    limits = BundleLimits()
    if stored is None:
        raw = encode_index_bytes(index) + b"\x00"
    elif stored == "nosize":
        raw = _frame_without_size(index)
    elif stored == "toobig":
        raw = encode_index_bytes(index)
        limits = BundleLimits(max_index_size=len(raw) + 1)  # stored fits, JSON does not
    else:
        assert isinstance(stored, bytes)
        raw = stored
    with pytest.raises(FormatError, match=match):
        read_head(reassemble(raw, payload, stored=True), limits=limits)


def test_head_version_newer_is_refused_before_anything_else(tmp_path: Path) -> None:
    path = tmp_path / "b.bundle"
    build_bundle(path)
    data = bytearray(path.read_bytes())
    data[8:10] = (FORMAT_VERSION + 1).to_bytes(2, "big")
    data[20:] = bytes(len(data) - 20)  # nothing after the fixed head makes sense any more
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedVersionError, match="upgrade"):
        BundleReader(path)
