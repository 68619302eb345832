"""Hostile and broken input: only clean DeltaportError subclasses, nothing half-done."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import random
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
    return _rewrite_section(patch, "ops", ops)


def _ops_of(patch: bytes) -> bytes:
    return _section(patch, "ops")


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


def _section(patch: bytes, name: str) -> bytes:
    head = read_head(io.BytesIO(patch), 1 << 20, 100)
    section = head.meta.section(name)
    assert section is not None and section.codec == "zstd"
    raw = patch[section.offset : section.offset + section.length]
    return zstandard.ZstdDecompressor().decompressobj().decompress(raw)


def _rewrite_section(patch: bytes, name: str, data: bytes) -> bytes:
    """The same patch with section NAME replaced (zstd, digests recomputed)."""
    head = read_head(io.BytesIO(patch), 1 << 20, 100)
    blobs = {s.name: patch[s.offset : s.offset + s.length] for s in head.meta.sections}
    blobs[name] = zstandard.ZstdCompressor().compress(data)
    sections = tuple(Section(s.name, s.codec, len(blobs[s.name])) for s in head.meta.sections)
    meta = dataclasses.replace(head.meta, sections=sections)
    blob = encode_meta(meta)
    body = b"".join(blobs[s.name] for s in sections)
    out = io.BytesIO()
    write_preamble(out, blob, hashlib.sha256(blob + body).digest())
    return out.getvalue() + body


def _varint_be7(value: int) -> bytes:
    """HDiffPatch's header number: 7 bits a byte, most significant first, high bit = more."""
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(groups))


@pytest.mark.parametrize("declared", [1 << 40, 3])
def test_an_hdiff_delta_declaring_other_sizes_than_its_op_is_refused_before_it_runs(
    tmp_path: Path, declared: int
) -> None:
    """A hostile HDiffPatch header (a terabyte, or too few bytes) never reaches hdiffpatch:
    check_hdiff_sizes compares it with the op's sizes first (without it, hdiffpatch is
    asked to allocate what the header says)."""
    body = random.Random(7).randbytes(64 << 10)  # incompressible: only a delta pays
    old = [Member("etc", "dir"), Member("etc/a", "file", body)]
    new = [Member("etc", "dir"), Member("etc/a", "file", body[:30000] + b"!" + body[30000:])]
    src, tgt = tmp_path / "s.tar", tmp_path / "t.tar"
    src_id = write_layer(src, old, tarfile.GNU_FORMAT)
    write_layer(tgt, new, tarfile.GNU_FORMAT)
    out = io.BytesIO()  # zstd deltas off: the file is diffed by HDiffPatch
    build_layer_patch(tgt, [SourceLayer(src_id, src)], out,
                      config=dataclasses.replace(FAST, zstd_delta_max=0))
    patch, sources, target = out.getvalue(), {src_id: src}, tgt.read_bytes()
    deltas = _section(patch, "deltas")
    magic = deltas.find(b"HDIFF13&")
    assert magic >= 0, "the fixture's patch has no HDiffPatch delta"
    end = deltas.index(b"\x00", magic + 8) + 1
    pos, sizes = end, []
    for _ in range(2):  # new size, then old size
        start = pos
        while deltas[pos] & 0x80:
            pos += 1
        pos += 1
        sizes.append((start, pos))
    (new_start, new_end), _ = sizes
    forged = deltas[:new_start] + _varint_be7(declared) + deltas[new_end:]
    forged = forged[: len(deltas)].ljust(len(deltas), b"\x00")  # the op's patch_len stays right
    assert _apply(_rewrite_section(patch, "deltas", deltas), sources) == target
    hostile = _rewrite_section(patch, "deltas", forged)
    with pytest.raises(FormatError, match="delta header sizes do not match its op"):
        _apply(hostile, sources)


@pytest.mark.parametrize(("patch", "error"), [
    (b"BSDIFF40" + b"\x00" * 32, FormatError),
    (b"HDIFF13&" + b"zstd" * 9, FormatError),          # no end of its compression name
    (b"HDIFF13&\x00" + b"\x85", TruncatedError),        # a number cut in the middle
    (b"HDIFF13&\x00" + b"\xff" * 11, FormatError),      # a number longer than 64 bits
])
def test_check_hdiff_sizes_refuses_malformed_headers(patch: bytes, error: type[Exception]) -> None:
    from deltaport.delta.apply import check_hdiff_sizes

    with pytest.raises(error):
        check_hdiff_sizes(patch, 10, 10)
