"""Hostile and broken input: only clean DeltaportError subclasses, nothing half-done."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import struct
import tarfile
from pathlib import Path

import pytest
import zstandard

from deltaport.delta import SourceLayer, apply_layer_patch, build_layer_patch
from deltaport.delta.container import Section, encode_meta, read_head, write_preamble
from deltaport.delta.protocol import FORMAT_VERSION, MAGIC, Op
from deltaport.errors import (
    DeltaportError,
    FormatError,
    IntegrityError,
    MissingSourceError,
    TruncatedError,
    UnsupportedVersionError,
)
from tests.delta.conftest import FAST
from tests.delta.layers import Member, write_layer


@pytest.fixture
def small(tmp_path: Path) -> tuple[bytes, dict[str, Path], bytes]:
    """A small delta patch (copy, delta, literal, gzip-free), its sources and target."""
    old = [Member("etc", "dir"), Member("etc/a", "file", b"alpha " * 300),
           Member("etc/b", "file", b"beta " * 200), Member("etc/c", "file", b"same" * 50)]
    edited = b"alpha " * 150 + b"!" + b"alpha " * 150
    new = [Member("etc", "dir", mtime=9), Member("etc/a", "file", edited),
           Member("etc/c", "file", b"same" * 50), Member("etc/d", "file", b"new file\n")]
    src, tgt = tmp_path / "s.tar", tmp_path / "t.tar"
    src_id = write_layer(src, old, tarfile.GNU_FORMAT)
    write_layer(tgt, new, tarfile.GNU_FORMAT)
    patch = io.BytesIO()
    build_layer_patch(tgt, [SourceLayer(src_id, src)], patch, config=FAST)
    return patch.getvalue(), {src_id: src}, tgt.read_bytes()


def _apply(patch: bytes, sources: dict[str, Path]) -> bytes:
    out = io.BytesIO()
    apply_layer_patch(io.BytesIO(patch), sources, out)
    return out.getvalue()


def test_small_patch_applies(small: tuple[bytes, dict[str, Path], bytes]) -> None:
    patch, sources, target = small
    assert _apply(patch, sources) == target


def test_missing_source_is_named_and_nothing_written(
    small: tuple[bytes, dict[str, Path], bytes],
) -> None:
    patch, sources, _ = small
    out = io.BytesIO()
    with pytest.raises(MissingSourceError) as info:
        apply_layer_patch(io.BytesIO(patch), {}, out)
    assert info.value.missing == list(sources)
    assert next(iter(sources)) in str(info.value)
    assert out.getvalue() == b""


def test_source_with_right_name_but_other_content(
    small: tuple[bytes, dict[str, Path], bytes], tmp_path: Path
) -> None:
    patch, sources, _ = small
    (diff_id, path), = sources.items()
    data = path.read_bytes().replace(b"samesame", b"SAMESAME")
    bad = tmp_path / "bad.tar"
    bad.write_bytes(data)
    with pytest.raises(IntegrityError, match="sha256:"):
        _apply(patch, {diff_id: bad})


def test_source_of_wrong_size(small: tuple[bytes, dict[str, Path], bytes], tmp_path: Path) -> None:
    patch, sources, _ = small
    (diff_id, path), = sources.items()
    bad = tmp_path / "short.tar"
    bad.write_bytes(path.read_bytes()[:-512])
    with pytest.raises(IntegrityError, match=diff_id):
        _apply(patch, {diff_id: bad})


def test_every_byte_flipped(small: tuple[bytes, dict[str, Path], bytes]) -> None:
    patch, sources, _ = small
    for i in range(len(patch)):
        broken = bytearray(patch)
        broken[i] ^= 0xFF
        with pytest.raises(DeltaportError):
            _apply(bytes(broken), sources)


def test_truncated_patches(small: tuple[bytes, dict[str, Path], bytes]) -> None:
    patch, sources, _ = small
    for n in range(0, len(patch), max(1, len(patch) // 97)):
        with pytest.raises((FormatError, TruncatedError)):
            _apply(patch[:n], sources)


def test_trailing_bytes_rejected(small: tuple[bytes, dict[str, Path], bytes]) -> None:
    patch, sources, _ = small
    with pytest.raises(FormatError):
        _apply(patch + b"x", sources)


def test_newer_version_rejected(small: tuple[bytes, dict[str, Path], bytes]) -> None:
    patch, sources, _ = small
    newer = MAGIC + struct.pack(">H", FORMAT_VERSION + 1) + patch[6:]
    with pytest.raises(UnsupportedVersionError, match="newer"):
        _apply(newer, sources)


def test_not_a_patch(small: tuple[bytes, dict[str, Path], bytes]) -> None:
    _, sources, _ = small
    with pytest.raises(FormatError, match="magic"):
        _apply(b"PK\x03\x04 zip file", sources)


def _rewrite_ops(patch: bytes, ops: bytes) -> bytes:
    """The same patch with another (correctly digested) op stream: reaches the interpreter."""
    head = read_head(io.BytesIO(patch), 1 << 20, 100)
    blobs = {s.name: patch[s.offset : s.offset + s.length] for s in head.meta.sections}
    blobs["ops"] = zstandard.ZstdCompressor().compress(ops)
    sections = tuple(Section(s.name, s.codec, len(blobs[s.name])) for s in head.meta.sections)
    meta = dataclasses.replace(head.meta, sections=sections)
    blob = encode_meta(meta)
    body = b"".join(blobs[s.name] for s in sections)
    out = io.BytesIO()
    write_preamble(out, blob, hashlib.sha256(blob + body).digest())
    return out.getvalue() + body


def _ops_of(patch: bytes) -> bytes:
    head = read_head(io.BytesIO(patch), 1 << 20, 100)
    ops = head.meta.section("ops")
    assert ops is not None
    raw = patch[ops.offset : ops.offset + ops.length]
    return zstandard.ZstdDecompressor().decompressobj().decompress(raw)


def test_hostile_op_streams_with_valid_digests(small: tuple[bytes, dict[str, Path], bytes]) -> None:
    patch, sources, target = small
    ops = _ops_of(patch)
    assert _apply(_rewrite_ops(patch, ops), sources) == target
    for i in range(len(ops)):
        for value in (ops[i] ^ 0x01, ops[i] ^ 0x80, 0xFF, 0x00):
            broken = bytearray(ops)
            broken[i] = value
            with contextlib.suppress(DeltaportError):
                _apply(_rewrite_ops(patch, bytes(broken)), sources)
    for cut in range(len(ops)):
        with pytest.raises(DeltaportError):
            _apply(_rewrite_ops(patch, ops[:cut]), sources)
    huge = bytearray([Op.ZEROS]) + b"\xff" * 9 + b"\x01"
    with pytest.raises(FormatError):
        _apply(_rewrite_ops(patch, bytes(huge)), sources)
