"""Format versions and the strict schema of index.json."""

from __future__ import annotations

import hashlib
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


def test_tar_framing_that_disagrees_with_the_index_is_refused(tmp_path: Path) -> None:
    """A signer whose tar headers differ from the index (chunk digests made to match)."""
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "f.bundle"
    build_bundle(path, key=key)
    index_bytes, _, payload = split_bundle(path.read_bytes())
    document = json.loads(index_bytes)
    header = bytearray(payload[:512])
    header[100:108] = b"0000600\x00"  # mode of the first member's header
    forged_payload = bytes(header) + payload[512:]
    size = document["chunk_size"]
    document["chunk_digests"] = [
        "sha256:" + hashlib.sha256(forged_payload[i : i + size]).hexdigest()
        for i in range(0, len(forged_payload), size)
    ]
    path.write_bytes(reassemble(json.dumps(document).encode(), forged_payload, key=key))
    reader = BundleReader(path, trusted_keys=[key.public_key()])
    with reader, pytest.raises(FormatError, match="framing"):
        reader.verify_all()
