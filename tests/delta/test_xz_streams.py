"""The ELF section as several .xz streams compressed in parallel (format 2)."""

from __future__ import annotations

import dataclasses
import io
import random
import tarfile
from pathlib import Path
from typing import Any

import pytest

from deltaport.delta import apply_layer_patch, build_full_layer
from deltaport.delta.container import read_head
from deltaport.delta.protocol import CODEC_XZ, SECTION_ELF
from deltaport.delta.streams import SectionReader, open_decoder
from deltaport.errors import FormatError
from tests.delta.conftest import FAST
from tests.delta.layers import Member, write_layer

_XZ_MAGIC = b"\xfd7zXZ\x00"


def _elf(seed: int, size: int) -> bytes:
    """Compressible pseudo machine code: an ELF magic, then words from a small vocabulary."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 9)) for _ in range(300)]
    out = bytearray(b"\x7fELF")
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


def _build(tmp_path: Path, workers: int) -> tuple[bytes, bytes]:
    members = [
        Member("usr/bin/a", "file", _elf(1, 1_500_000)),
        Member("usr/bin/b", "file", _elf(2, 1_200_000)),
        Member("etc/conf", "file", b"key=value\n" * 100),
    ]
    tgt = tmp_path / "t.tar"
    write_layer(tgt, members, tarfile.PAX_FORMAT)
    config = dataclasses.replace(FAST, workers=workers, xz_piece=512 << 10, verify=True)
    patch = io.BytesIO()
    stats = build_full_layer(tgt, patch, config=config)
    assert stats.counts.get("literal_elf") == 2
    return patch.getvalue(), tgt.read_bytes()


@pytest.mark.parametrize("workers", [1, 2])
def test_elf_section_in_several_xz_streams_round_trips(tmp_path: Path, workers: int) -> None:
    patch, target = _build(tmp_path, workers)
    meta = read_head(io.BytesIO(patch), 1 << 20, 16).meta
    elf = meta.section(SECTION_ELF)
    assert elf is not None and elf.codec == CODEC_XZ
    body = patch[elf.offset : elf.offset + elf.length]
    assert body.count(_XZ_MAGIC) >= 4  # 2.7 MB in pieces of at most 512 KiB
    out = io.BytesIO()
    apply_layer_patch(io.BytesIO(patch), {}, out)
    assert out.getvalue() == target


def _decode_all(body: bytes) -> bytes:
    dec = open_decoder(
        SectionReader(io.BytesIO(body), 0, len(body)), SECTION_ELF, CODEC_XZ,
        window_log=27, xz_memory=256 << 20,
    )
    out = dec.read_exact(2_700_000)
    assert dec.read(1) == b""  # nothing after the last stream
    return out


def test_corrupt_or_trailing_bytes_after_a_stream_are_rejected(tmp_path: Path) -> None:
    patch, _ = _build(tmp_path, 1)
    meta = read_head(io.BytesIO(patch), 1 << 20, 16).meta
    elf = meta.section(SECTION_ELF)
    assert elf is not None
    body = patch[elf.offset : elf.offset + elf.length]
    decoded = _decode_all(body)
    assert decoded[:4] == b"\x7fELF"
    second = body.index(_XZ_MAGIC, 1)
    broken = body[: second + 40] + bytes([body[second + 40] ^ 0xFF]) + body[second + 41 :]
    with pytest.raises(FormatError):
        _decode_all(broken)
    with pytest.raises(FormatError):
        _decode_all(body + b"junk-after-the-last-stream")


def test_self_check_runs_only_for_non_trivial_patches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltaport.delta import SourceLayer, build
    from deltaport.delta import build_layer_patch as build_patch

    calls: list[int] = []
    real = build._verify

    def counted(*a: Any) -> Any:
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(build, "_verify", counted)
    config = dataclasses.replace(FAST, verify=True)
    text = b"line of text number %d\n"
    src, tgt = tmp_path / "s.tar", tmp_path / "t.tar"
    src_id = write_layer(src, [Member("a", "file", b"".join(text % i for i in range(3000)))],
                         tarfile.GNU_FORMAT)
    write_layer(tgt, [Member("new", "file", b"fresh content\n" * 50)], tarfile.GNU_FORMAT)
    build_patch(tgt, [SourceLayer(src_id, src)], io.BytesIO(), config=config)
    assert calls == []  # literals only
    edited = b"".join(text % (i if i != 1500 else -1) for i in range(3000))
    write_layer(tgt, [Member("a", "file", edited)], tarfile.GNU_FORMAT)
    stats = build_patch(tgt, [SourceLayer(src_id, src)], io.BytesIO(), config=config)
    assert stats.counts.get("delta_solid") or stats.counts.get("delta")
    assert calls == [1]


def test_rewritten_source_is_rescanned(tmp_path: Path) -> None:
    """The scan cache is keyed by diff_id and file identity: new content, new scan."""
    from deltaport.delta import SourceLayer
    from deltaport.delta import build_layer_patch as build_patch

    src, tgt = tmp_path / "s.tar", tmp_path / "t.tar"
    write_layer(tgt, [Member("a", "file", b"target text " * 400)], tarfile.GNU_FORMAT)
    for body in (b"old text " * 300, b"other words, longer " * 500):
        src_id = write_layer(src, [Member("a", "file", body)], tarfile.GNU_FORMAT)
        patch = io.BytesIO()
        build_patch(tgt, [SourceLayer(src_id, src)], patch, config=FAST)
        out = io.BytesIO()
        apply_layer_patch(patch, {src_id: src}, out)
        assert out.getvalue() == tgt.read_bytes()


def test_parallel_build_never_forks_the_calling_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub builds in threads: its workers come from a fork server, not os.fork here.

    With the ``fork`` start method the executor forks this (multi-threaded) process, which
    can copy locks held by other threads; the patched os.fork makes that an error.
    """
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single, _ = _build(tmp_path / "one", workers=1)

    def no_fork() -> int:
        raise AssertionError("the builder forked the calling process")

    monkeypatch.setattr("os.fork", no_fork)
    parallel, target = _build(tmp_path / "two", workers=2)
    assert parallel == single
    out = io.BytesIO()
    apply_layer_patch(io.BytesIO(parallel), {}, out)
    assert out.getvalue() == target
