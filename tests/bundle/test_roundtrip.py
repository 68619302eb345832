"""Writing and reading real bundle files: contents, layout, the old format, cleanup."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deltaport.bundle import FORMAT_VERSION, BundleReader, BundleWriter, key_id
from deltaport.bundle.format import HEAD_FIXED_SIZE, MAGIC
from deltaport.errors import FormatError, StorageError, TruncatedError, UsageError
from tests.bundle.helpers import DEFAULT_MEMBERS, SMALL_CHUNK, build_bundle


def _read(reader: BundleReader, name: str, block: int = 1000) -> bytes:
    """Read a member in small pieces, as the streaming apply does."""
    parts = []
    with reader.open_member(name) as stream:
        while piece := stream.read(block):
            parts.append(piece)
    return b"".join(parts)


def test_round_trip_signed(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    content = {"kind": "image-delta", "layers": [{"diff_id": "sha256:" + "a" * 64}], "n": 1.5}
    path = tmp_path / "app.bundle"
    info = build_bundle(path, key=key, content=content)

    data = path.read_bytes()
    assert info.size == len(data)
    assert info.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.signer_key_id == key_id(key.public_key())
    assert os.listdir(tmp_path) == ["app.bundle"]

    with BundleReader(path, trusted_keys=[key.public_key()]) as reader:
        index = reader.index
        assert index.format_version == FORMAT_VERSION
        assert index.content == content
        assert index.signer_key_id == key_id(key.public_key())
        assert index.index_digest == info.index_digest
        assert index.bundle_size == len(data)
        assert index.chunk_size == SMALL_CHUNK
        assert index.chunk_count >= 3
        assert [m.name for m in index.members] == [name for name, _ in DEFAULT_MEMBERS]
        assert index.members == info.members
        for name, expected in DEFAULT_MEMBERS:
            member = index.member(name)
            assert member.size == len(expected)
            assert member.digest == "sha256:" + hashlib.sha256(expected).hexdigest()
            assert _read(reader, name) == expected
            start = index.payload_offset + member.offset
            assert data[start : start + member.size] == expected
        reader.verify_all()


def test_unsigned_round_trip_and_read_all_at_once(tmp_path: Path) -> None:
    path = tmp_path / "u.bundle"
    info = build_bundle(path)
    assert info.signer_key_id is None
    with BundleReader(path) as reader:
        assert reader.index.signer_key_id is None
        with reader.open_member("layer-0.patch") as stream:
            assert stream.read() == DEFAULT_MEMBERS[2][1]
        with reader.open_member("empty") as stream:
            assert stream.read() == b""
        reader.verify_all()


def test_two_member_streams_open_at_once(tmp_path: Path) -> None:
    path = tmp_path / "b.bundle"
    build_bundle(path)
    with (
        BundleReader(path) as reader,
        reader.open_member("layer-0.patch") as a,
        reader.open_member("config.json") as b,
    ):
        first = a.read(10)
        assert b.read() == DEFAULT_MEMBERS[0][1]
        assert first + a.read() == DEFAULT_MEMBERS[2][1]


def test_stream_sources_seekable_sized_and_unsized(tmp_path: Path) -> None:
    big = os.urandom(3 * SMALL_CHUNK + 17)
    r, w = os.pipe()
    os.write(w, b"from a pipe" * 100)
    os.close(w)
    path = tmp_path / "s.bundle"
    with BundleWriter(path, chunk_size=SMALL_CHUNK) as writer, os.fdopen(r, "rb") as pipe:
        writer.add_member("seekable", io.BytesIO(big))
        partly_read = io.BytesIO(b"skip" + big)
        partly_read.read(4)  # a stream is read from where it stands
        writer.add_member("offset-stream", partly_read)
        writer.add_member("sized", io.BytesIO(big + b"extra"), size=len(big))
        writer.add_member("pipe", cast(BinaryIO, pipe), media_type="text/plain")
        writer.finish({}, None)
    with BundleReader(path) as reader:
        assert _read(reader, "seekable", 4096) == big
        assert _read(reader, "offset-stream", 4096) == big
        assert _read(reader, "sized", 4096) == big
        assert _read(reader, "pipe") == b"from a pipe" * 100
        assert reader.index.member("pipe").media_type == "text/plain"
        reader.verify_all()


def test_same_input_gives_same_bytes(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()  # Ed25519 signatures are deterministic
    a = build_bundle(tmp_path / "a.bundle", key=key)
    b = build_bundle(tmp_path / "b.bundle", key=key)
    assert a.digest == b.digest
    assert (tmp_path / "a.bundle").read_bytes() == (tmp_path / "b.bundle").read_bytes()


def test_layout_is_fixed_head_index_signatures_then_members_back_to_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.bundle"
    build_bundle(path, key=Ed25519PrivateKey.generate())
    data = path.read_bytes()
    assert data[:8] == MAGIC
    assert int.from_bytes(data[8:10], "big") == FORMAT_VERSION == 4
    assert data[10:12] == b"\x00\x00"
    index_len, sig_len = int.from_bytes(data[12:16], "big"), int.from_bytes(data[16:20], "big")
    with BundleReader(path) as reader:
        assert reader.index.payload_offset == HEAD_FIXED_SIZE + index_len + sig_len
        assert data[HEAD_FIXED_SIZE + index_len : reader.index.payload_offset] == (
            reader.signature_bytes
        )
        payload = data[reader.index.payload_offset :]
        assert payload == b"".join(d for _, d in DEFAULT_MEMBERS)
        for member, (name, member_data) in zip(reader.index.members, DEFAULT_MEMBERS, strict=True):
            assert member.name == name
            assert payload[member.offset : member.offset + member.size] == member_data


def test_format_1_tar_bundle_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    old = tmp_path / "v1.bundle"
    src = tmp_path / "index.json"
    src.write_text('{"format_version":1}')
    with tarfile.open(old, "w", format=tarfile.USTAR_FORMAT) as archive:
        archive.add(src, arcname="index.json")
    with pytest.raises(FormatError, match="format-1 \\(tar\\) bundle"):
        BundleReader(old)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a/b",
        "..",
        "a..b",
        ".hidden",
        "nul\x00",
        "sp ace",
        "é",
        "x" * 101,
        "index.json",
        "index.sig",
    ],
)
def test_writer_rejects_bad_member_names(tmp_path: Path, name: str) -> None:
    with BundleWriter(tmp_path / "n.bundle") as writer, pytest.raises(UsageError):
        writer.add_member(name, b"x")


def test_writer_accepts_portable_names(tmp_path: Path) -> None:
    names = ["layer-1.patch", "sha256:" + "0" * 64 + ".patch", "a_b+c=d@e,f", "x" * 100]
    build_bundle(tmp_path / "ok.bundle", [(n, n.encode()) for n in names])
    with BundleReader(tmp_path / "ok.bundle") as reader:
        assert [m.name for m in reader.index.members] == names
        reader.verify_all()


def test_writer_rejects_duplicates_and_bad_media_type(tmp_path: Path) -> None:
    with BundleWriter(tmp_path / "d.bundle") as writer:
        writer.add_member("a", b"1")
        with pytest.raises(UsageError, match="already"):
            writer.add_member("a", b"2")
        with pytest.raises(UsageError, match="media type"):
            writer.add_member("b", b"2", media_type="not a type")
        info = writer.finish({}, None)  # rejected calls left the writer usable
    assert [m.name for m in info.members] == ["a"]


def test_writer_rejects_bad_chunk_size(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        BundleWriter(tmp_path / "c.bundle", chunk_size=100)


class _FailingStream(io.RawIOBase):
    """A source that breaks after some bytes, like a dying registry connection."""

    def __init__(self, good: int) -> None:
        self._left = good

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            raise ConnectionResetError("source went away")
        n = min(len(buffer), self._left)
        memoryview(buffer)[:n] = b"z" * n
        self._left -= n
        return n


def test_failed_write_leaves_no_file_and_keeps_old_bundle(tmp_path: Path) -> None:
    path = tmp_path / "keep.bundle"
    path.write_bytes(b"the previous bundle")
    with pytest.raises(ConnectionResetError), BundleWriter(path) as writer:
        writer.add_member("a", b"fine")
        writer.add_member("b", cast(BinaryIO, _FailingStream(50_000)), size=100_000)
    assert os.listdir(tmp_path) == ["keep.bundle"]
    assert path.read_bytes() == b"the previous bundle"


def test_failed_finish_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bundle"
    with pytest.raises(FormatError, match="JSON"), BundleWriter(path) as writer:
        writer.add_member("a", b"x")
        writer.finish({"bad": {1, 2}}, None)
    assert os.listdir(tmp_path) == []


def test_short_source_is_truncated_error_and_writer_is_then_unusable(tmp_path: Path) -> None:
    with BundleWriter(tmp_path / "s.bundle") as writer:
        with pytest.raises(TruncatedError, match="'a'"):
            writer.add_member("a", io.BytesIO(b"abc"), size=10)
        with pytest.raises(UsageError):
            writer.finish({}, None)
    assert os.listdir(tmp_path) == []


def test_leaving_without_finish_discards(tmp_path: Path) -> None:
    with BundleWriter(tmp_path / "x.bundle") as writer:
        writer.add_member("a", b"x")
    assert os.listdir(tmp_path) == []
    with pytest.raises(UsageError):
        writer.add_member("b", b"y")


def test_writer_in_missing_folder_is_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        BundleWriter(tmp_path / "nope" / "x.bundle")


def test_reader_errors_for_missing_file_and_member(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        BundleReader(tmp_path / "absent.bundle")
    build_bundle(tmp_path / "b.bundle")
    with BundleReader(tmp_path / "b.bundle") as reader, pytest.raises(FormatError, match="zzz"):
        reader.index.member("zzz")
