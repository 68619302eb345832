"""Which codec a section gets, and which small files are worth a delta (the S1 choices)."""

from __future__ import annotations

import dataclasses
import io
import os
import random
import tarfile
from pathlib import Path

import pytest

from deltaport.delta import SourceLayer, apply_layer_patch, build_full_layer, build_layer_patch
from deltaport.delta.build import _full_pays
from deltaport.delta.container import PatchMeta, read_head
from deltaport.delta.encode import best_delta, estimate
from deltaport.delta.model import DeltaConfig, LayerPatchStats
from deltaport.delta.protocol import CODEC_XZ, CODEC_ZSTD, SECTION_LITERALS
from tests.delta.conftest import FAST
from tests.delta.layers import Member, write_layer

_XZ_MAGIC = b"\xfd7zXZ\x00"
_LINES = [
    "  const {a} = require('{b}');\n",
    "  if ({a}.{b} === undefined) {{ return callback(null, {n}); }}\n",
    "function {a}({b}, options) {{\n  this.{b} = {b} || {n};\n}}\n",
    "  {a}.prototype.{b} = function () {{ return this.{a}[{n}]; }};\n",
    "module.exports.{a} = {b};\n",
    "// {a} {b} see https://github.com/{a}/{b}/issues/{n}\n",
]
_CONFIG = dataclasses.replace(FAST, zstd_level=19, verify=True)


def _js(seed: int, size: int) -> bytes:
    """Script-like text: lines of common shapes naming the seed's own identifiers."""
    rng = random.Random(seed)
    names = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(4, 10)))
             for _ in range(80)]
    out: list[str] = []
    n = 0
    while n < size:
        line = rng.choice(_LINES).format(
            a=rng.choice(names), b=rng.choice(names), n=rng.randint(0, 9999)
        )
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def _edit(data: bytes, seed: int) -> bytes:
    """data with a few bytes changed in a few places (a patch-level version bump)."""
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(3):
        at = rng.randrange(len(out))
        out[at : at + 4] = b"v2.1"
    return bytes(out)


def _layers(tmp: Path, old: list[Member], new: list[Member]) -> tuple[SourceLayer, Path]:
    src, tgt = tmp / "old.tar", tmp / "new.tar"
    src_id = write_layer(src, old, tarfile.PAX_FORMAT)
    write_layer(tgt, new, tarfile.PAX_FORMAT)
    return SourceLayer(src_id, src), tgt


def _build(
    tgt: Path, sources: list[SourceLayer], config: DeltaConfig
) -> tuple[bytes, LayerPatchStats, PatchMeta]:
    """Build, apply back (byte-exact), return the patch, its stats and its meta."""
    out = io.BytesIO()
    stats = build_layer_patch(tgt, sources, out, config=config)
    patch = out.getvalue()
    rebuilt = io.BytesIO()
    apply_layer_patch(io.BytesIO(patch), {s.diff_id: s.path for s in sources}, rebuilt)
    assert rebuilt.getvalue() == tgt.read_bytes()
    return patch, stats, read_head(io.BytesIO(patch), 1 << 20, 16).meta


def _text_target(tmp: Path) -> tuple[SourceLayer, Path]:
    """An npm-like layer: one package kept (edited), several new ones (literal text)."""
    kept = _js(0, 40_000)
    old = [Member("node_modules/kept/index.js", "file", kept)]
    new = [
        Member("node_modules/kept/index.js", "file", _edit(kept, 1)),
        *[Member(f"node_modules/p{i}/index.js", "file", _js(10 + i, 300_000)) for i in range(6)],
    ]
    return _layers(tmp, old, new)


def test_text_literals_of_a_delta_patch_are_one_xz_stream_without_bcj(tmp_path: Path) -> None:
    source, tgt = _text_target(tmp_path)
    patch, stats, meta = _build(tgt, [source], _CONFIG)
    lit = meta.section(SECTION_LITERALS)
    assert stats.mode == "delta"
    assert lit is not None and lit.codec == CODEC_XZ
    assert stats.section_codecs[SECTION_LITERALS] == CODEC_XZ
    assert meta.literal_dict is None  # xz has no dictionary: the applier reads none
    body = patch[lit.offset : lit.offset + lit.length]
    assert body.count(_XZ_MAGIC) == 1  # one stream: later files match earlier ones
    block_flags = body[13]  # stream header (12 bytes), block header size byte, flags
    assert block_flags & 0x03 == 0  # a single filter (LZMA2): no x86 BCJ on text


def test_text_xz_switched_off_keeps_zstd(tmp_path: Path) -> None:
    source, tgt = _text_target(tmp_path)
    off = dataclasses.replace(_CONFIG, text_xz_max=0)
    xz_patch, _, _ = _build(tgt, [source], _CONFIG)
    zstd_patch, _, meta = _build(tgt, [source], off)
    lit = meta.section(SECTION_LITERALS)
    assert lit is not None and lit.codec == CODEC_ZSTD
    assert len(xz_patch) < 0.99 * len(zstd_patch)  # xz is chosen because it is smaller


def _full(tgt: Path, config: DeltaConfig) -> tuple[bytes, str]:
    full = io.BytesIO()
    build_full_layer(tgt, full, config=config)
    lit = read_head(io.BytesIO(full.getvalue()), 1 << 20, 16).meta.section(SECTION_LITERALS)
    assert lit is not None
    return full.getvalue(), lit.codec


def test_self_contained_patch_text_goes_to_xz_unless_switched_off(tmp_path: Path) -> None:
    """A first image's literals are xz where a sample wins (built once, cached), and the
    patch rebuilds the layer without any source; ``text_xz_full=False`` keeps zstd."""
    _, tgt = _text_target(tmp_path)
    xz_patch, codec = _full(tgt, _CONFIG)
    assert codec == CODEC_XZ
    zstd_patch, codec = _full(tgt, dataclasses.replace(_CONFIG, text_xz_full=False))
    assert codec == CODEC_ZSTD
    assert len(xz_patch) < 0.99 * len(zstd_patch)
    out = io.BytesIO()
    apply_layer_patch(io.BytesIO(xz_patch), {}, out)
    assert out.getvalue() == tgt.read_bytes()


def test_incompressible_literals_stay_zstd(tmp_path: Path) -> None:
    kept = _js(0, 40_000)
    source, tgt = _layers(
        tmp_path,
        [Member("a/kept.js", "file", kept)],
        [
            Member("a/kept.js", "file", _edit(kept, 1)),
            Member("a/blob", "file", os.urandom(400_000)),
        ],
    )
    _, stats, meta = _build(tgt, [source], _CONFIG)
    lit = meta.section(SECTION_LITERALS)
    assert lit is not None and lit.codec == CODEC_ZSTD
    assert stats.section_codecs[SECTION_LITERALS] == CODEC_ZSTD


@pytest.mark.parametrize(("pairs", "workers"), [(10, 1), (40, 2)])
def test_small_files_join_a_group_only_when_their_own_delta_pays(
    tmp_path: Path, pairs: int, workers: int
) -> None:
    """Edited files and rewritten ones, all under group_max_file, one group's worth.

    Decided as one group the rewritten files (most of the bytes) sank the edited ones
    to literals; screened, the edited ones are a solid group and the others literal.
    80 files are screened in worker processes, 20 in the builder's own.
    """
    good_old = [_js(100 + i, 3_000) for i in range(pairs)]
    old = [
        *[Member(f"pkg/good{i}.js", "file", d) for i, d in enumerate(good_old)],
        *[Member(f"pkg/poor{i}.js", "file", _js(200 + i, 20_000)) for i in range(pairs)],
    ]
    new = [
        *[Member(f"pkg/good{i}.js", "file", _edit(d, i)) for i, d in enumerate(good_old)],
        *[Member(f"pkg/poor{i}.js", "file", _js(300 + i, 20_000)) for i in range(pairs)],
    ]
    source, tgt = _layers(tmp_path, old, new)
    config = dataclasses.replace(_CONFIG, workers=workers, group_max_bytes=16 << 20)
    _, stats, _ = _build(tgt, [source], config)
    assert stats.counts.get("delta_solid") == pairs
    assert stats.counts.get("literal") == pairs


def test_zstd_delta_cost_is_in_literal_estimate_units() -> None:
    """An unrelated base gains nothing: its zstd-19 delta must not look cheaper than a literal.

    Compared unscaled with the level-3 literal estimate, level 19 alone looked like a
    10-20 % delta gain on text and let useless deltas in.
    """
    new = _js(1, 200_000)
    unrelated = _js(2, 200_000)
    assert best_delta(unrelated, new, 1 << 20).cost > 0.85 * estimate(new)
    related = _edit(new, 3)
    assert best_delta(related, new, 1 << 20).cost < 0.1 * estimate(new)


def test_no_full_trial_when_literals_went_to_xz() -> None:
    stats = LayerPatchStats(
        target_diff_id="sha256:" + "0" * 64, target_size=1000, patch_size=100, mode="delta",
        required_sources=("sha256:" + "1" * 64,), counts={"literal": 1},
        new_bytes={"literal": 1000}, section_bytes={"literals": 99, "ops": 1},
        section_codecs={"literals": CODEC_ZSTD},
    )
    assert _full_pays(stats)  # all literal, close call: the trial runs
    xz = dataclasses.replace(stats, section_codecs={"literals": CODEC_XZ})
    assert not _full_pays(xz)


def _as_machine(elf: bytes, machine: int) -> bytes:
    return elf[:18] + machine.to_bytes(2, "little") + elf[20:]


@pytest.mark.parametrize("machine", [62, 183])
def test_the_branch_filter_follows_the_code_architecture(tmp_path: Path, machine: int) -> None:
    """x86 BCJ before LZMA2 for x86-64 code; never for AArch64 (e_machine 183), where it
    only costs bytes. The .xz stream names its filters, so the applier needs nothing."""
    from deltaport.delta.protocol import SECTION_ELF
    from deltaport.delta.sections import elf_machine

    busybox = Path("/bin/busybox").read_bytes()
    assert elf_machine(busybox[:20]) == 62 and elf_machine(b"#!/bin/sh\n" * 3) is None
    elf = _as_machine(busybox, machine)
    assert elf_machine(elf[:20]) == machine
    tgt = tmp_path / "new.tar"
    write_layer(tgt, [Member("bin/busybox", "file", elf)], tarfile.PAX_FORMAT)
    full = io.BytesIO()
    build_full_layer(tgt, full, config=_CONFIG)
    patch = full.getvalue()
    out = io.BytesIO()
    apply_layer_patch(io.BytesIO(patch), {}, out)
    assert out.getvalue() == tgt.read_bytes()
    section = read_head(io.BytesIO(patch), 1 << 20, 16).meta.section(SECTION_ELF)
    assert section is not None
    body = patch[section.offset : section.offset + section.length]
    if machine == 62:
        assert section.codec == CODEC_XZ
        assert body[13] & 0x03 == 1  # block flags: two filters, x86 BCJ and LZMA2
    else:  # x86 code under an AArch64 header: without BCJ zstd may win, never BCJ
        assert section.codec == CODEC_ZSTD or body[13] & 0x03 == 0
