"""apply(build) is byte-exact, on generated layers and on every encoding path."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltaport.delta import (
    DeltaConfig,
    SourceLayer,
    apply_layer_patch,
    build_full_layer,
    build_layer_patch,
    read_patch_requirements,
)
from tests.delta.conftest import FAST
from tests.delta.layers import FORMATS, Member, edits, trees, write_layer


def _roundtrip(
    tmp: Path, target: Path, sources: list[SourceLayer], config: DeltaConfig
) -> dict[str, Any]:
    patch = io.BytesIO()
    stats = build_layer_patch(target, sources, patch, config=config)
    out = io.BytesIO()
    apply_layer_patch(patch, {s.diff_id: s.path for s in sources}, out)
    assert out.getvalue() == target.read_bytes()
    assert stats.patch_size == len(patch.getvalue())
    req = read_patch_requirements(patch)
    assert set(req.source_diff_ids) == set(stats.required_sources)
    assert req.target_size == target.stat().st_size
    return stats.to_json()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), fmt=st.sampled_from(FORMATS), trailer=st.sampled_from([b"", b"junk\x00"]))
def test_generated_layers_round_trip(
    tmp_path: Path, data: st.DataObject, fmt: int, trailer: bytes
) -> None:
    src_members = data.draw(trees())
    src = tmp_path / "src.tar"
    src_id = write_layer(src, src_members, fmt)
    tgt = tmp_path / "tgt.tar"
    write_layer(tgt, data.draw(edits(src_members)), data.draw(st.sampled_from(FORMATS)), trailer)
    other = tmp_path / "other.tar"
    other_id = write_layer(other, data.draw(trees()), fmt)
    sources = [SourceLayer(src_id, src), SourceLayer(other_id, other)]
    _roundtrip(tmp_path, tgt, sources, FAST)
    _roundtrip(tmp_path, tgt, [], FAST)


def _pyc_like(i: int, stamp: int) -> bytes:
    return b"\x6f\x0d\x0d\x0a" + stamp.to_bytes(4, "little") + (b"code object %d " % i) * 50


def test_every_encoding_path_round_trips(tmp_path: Path) -> None:
    elf = b"\x7fELF" + os.urandom(64) + bytes(range(256)) * 400
    big_old = os.urandom(300_000) * 3
    big_new = big_old[:400_000] + b"patched!" + big_old[400_000:]
    text = b"".join(b"changelog entry %d\n" % i for i in range(3000))
    old = [
        Member("usr", "dir"),
        Member("usr/lib/libfoo.so.1.2", "file", elf),
        Member("usr/share/doc/changelog.gz", "file", gzip.compress(text, 9, mtime=0)),
        Member("usr/bin/big", "file", big_old),
        Member("same", "file", b"identical content" * 10),
        *[Member(f"py/m{i}.pyc", "file", _pyc_like(i, 1)) for i in range(30)],
    ]
    new = [
        Member("usr", "dir", mtime=5),
        Member("usr/lib/libfoo.so.1.3", "file", elf[:5000] + b"v1.3" + elf[5000:], mtime=5),
        Member("usr/share/doc/changelog.gz", "file", gzip.compress(text + b"new\n", 9, mtime=0)),
        Member("usr/bin/big", "file", big_new, mtime=5),
        Member("moved/same", "file", b"identical content" * 10),
        Member("zeros", "file", bytes(1_000_000)),
        Member("empty", "file", b""),
        *[Member(f"py/m{i}.pyc", "file", _pyc_like(i, 2)) for i in range(30)],
        Member("new.bin", "file", elf[::-1]),
    ]
    src, tgt = tmp_path / "old.tar", tmp_path / "new.tar"
    src_id = write_layer(src, old, tarfile.GNU_FORMAT)
    write_layer(tgt, new, tarfile.PAX_FORMAT)
    config = DeltaConfig(
        zstd_level=3, xz_preset=1, segment_size=256 << 10, segment_margin=8 << 10,
        header_chunk=4096, header_dict_size=8192,
    )
    stats = _roundtrip(tmp_path, tgt, [SourceLayer(src_id, src)], config)
    kinds = set(stats["counts"])
    assert {"copied", "delta", "delta_solid", "gzip_delta"} <= kinds, kinds
    assert stats["kind"] == "delta"
    assert stats["patch_size"] < 20_000


def test_full_layer_is_self_contained_and_smaller_than_gzip(tmp_path: Path) -> None:
    members = [Member(f"f{i}", "file", b"some text %d\n" % i * 200) for i in range(50)]
    tgt = tmp_path / "t.tar"
    write_layer(tgt, members, tarfile.PAX_FORMAT)
    patch = io.BytesIO()
    stats = build_full_layer(tgt, patch, config=DeltaConfig(zstd_level=19))
    assert stats.mode == "full" and stats.required_sources == ()
    assert stats.patch_size < len(gzip.compress(tgt.read_bytes(), 9))
    out = io.BytesIO()
    apply_layer_patch(patch, {}, out)
    assert out.getvalue() == tgt.read_bytes()


def test_unrelated_source_falls_back_to_full(tmp_path: Path) -> None:
    src, tgt = tmp_path / "s.tar", tmp_path / "t.tar"
    src_id = write_layer(src, [Member("a", "file", os.urandom(50_000))], tarfile.GNU_FORMAT)
    write_layer(tgt, [Member("a", "file", os.urandom(50_000))], tarfile.GNU_FORMAT)
    stats = _roundtrip(tmp_path, tgt, [SourceLayer(src_id, src)], FAST)
    assert stats["kind"] == "full" and stats["required_sources"] == []


def test_non_tar_target_is_carried_raw(tmp_path: Path) -> None:
    tgt = tmp_path / "t.tar"
    tgt.write_bytes(b"not a tar at all" * 100)
    _roundtrip(tmp_path, tgt, [], FAST)
