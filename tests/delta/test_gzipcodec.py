"""Exact re-gzip with the pinned zlib 1.3.2 (cmeel-zlib), never the host's libz."""

from __future__ import annotations

import ctypes.util
import dataclasses
import gzip
import hashlib
import importlib.metadata
import io
import os
import random
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltaport.delta import SourceLayer, apply_layer_patch, build_layer_patch, pinned_zlib
from deltaport.delta.container import encode_meta, read_head, write_preamble
from deltaport.delta.gzipcodec import gunzip_exact, gzip_member, split_gzip
from deltaport.errors import FormatError, InstallationError
from tests.delta.conftest import FAST
from tests.delta.layers import Member, write_layer

_TEXT = b"".join(b"pkg (1.%d) bookworm; urgency=medium\n  * fix %d\n" % (i, i) for i in range(2000))
_SAMPLES = {
    "empty": b"",
    "byte": b"a",
    "text": _TEXT,
    "random": random.Random(7).randbytes(60_000),
    "runs": b"\x00" * 70_000 + b"tail" * 9000,
}


def _flushed_gzip(data: bytes) -> bytes:
    """A valid .gz no plain deflate call reproduces: a full flush halfway through."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    half = len(data) // 2
    return comp.compress(data[:half]) + comp.flush(zlib.Z_FULL_FLUSH) + comp.compress(
        data[half:]
    ) + comp.flush()


def _system_deflate(data: bytes, level: int) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    return comp.compress(data) + comp.flush()


def test_loads_the_cmeel_library_and_checks_its_release() -> None:
    path = pinned_zlib.require()
    assert path.name == "libz.so.1.3.2"
    assert path.parent.parent.name == "cmeel.prefix"
    recorded = [
        Path(str(f.locate())).resolve()
        for f in importlib.metadata.distribution("cmeel-zlib").files or []
    ]
    assert path.resolve() in recorded
    assert pinned_zlib.VERSION == "zlib 1.3.2 (cmeel-zlib)"
    lib = pinned_zlib.load_library(path)
    assert lib.zlibVersion() == b"1.3.2"


def test_another_zlib_release_is_refused() -> None:
    # The host's own libz (Debian 12: 1.2.13), the one Python's zlib module uses.
    assert zlib.ZLIB_RUNTIME_VERSION != pinned_zlib.ZLIB_RELEASE
    system = ctypes.util.find_library("z")
    assert system is not None
    with pytest.raises(InstallationError, match=rf"release {zlib.ZLIB_RUNTIME_VERSION}, expected"):
        pinned_zlib.load_library(Path(system))


_GLOBAL_SYSTEM_ZLIB = """
import ctypes, ctypes.util, os
ctypes.CDLL(ctypes.util.find_library("z"), mode=os.RTLD_GLOBAL)
from deltaport.delta import pinned_zlib
pinned_zlib.deflate_raw(b"abc" * 1000, 9)
"""


def test_internal_calls_stay_in_the_pinned_library() -> None:
    """Even with the host libz loaded RTLD_GLOBAL first, deflateInit2_'s own call to
    deflateReset binds inside libz.so.1.3.2 (RTLD_DEEPBIND); without it, glibc binds
    it to the host's 1.2.13 (measured), mixing two releases on one stream."""
    env = {**os.environ, "LD_DEBUG": "bindings"}
    done = subprocess.run([sys.executable, "-c", _GLOBAL_SYSTEM_ZLIB], env=env,
                          capture_output=True, text=True, check=True, timeout=60)
    resets = [line for line in done.stderr.splitlines()
              if "normal symbol `deflateReset'" in line and "libz.so.1.3.2 [0] to" in line]
    assert resets, done.stderr[-2000:]
    assert all(line.split(" to ")[1].split(" [")[0].endswith("libz.so.1.3.2") for line in resets)


def test_missing_library_is_a_clear_error_not_a_fallback(tmp_path: Path) -> None:
    missing = r"pinned zlib 1\.3\.2 not found.*reinstall deltaport"
    with pytest.raises(InstallationError, match=missing):
        pinned_zlib.locate_library("no-such-deltaport-dist", site_dirs=[tmp_path])
    with pytest.raises(InstallationError, match="cannot be loaded"):
        pinned_zlib.load_library(tmp_path / "libz.so.1.3.2")


@settings(max_examples=60, deadline=None)
@given(data=st.one_of(st.binary(max_size=3000), st.integers(0, 400).map(lambda n: _TEXT[: n * 97])),
       level=st.integers(0, 9))
def test_deflate_raw_round_trips(data: bytes, level: int) -> None:
    assert zlib.decompress(pinned_zlib.deflate_raw(data, level), -15) == data


@pytest.mark.parametrize("name", sorted(_SAMPLES))
def test_deflate_raw_equals_system_zlib_on_samples(name: str) -> None:
    """Measured: 1.3.2 and the host's 1.2.13 agree at levels 1-9 on these samples.

    Level 0 (stored) does not: 1.3.2 writes 5 bytes less for non-empty input (its last
    stored block differs). No .gz the builder re-gzips uses level 0 (LEVELS).
    """
    data = _SAMPLES[name]
    for level in range(1, 10):
        assert pinned_zlib.deflate_raw(data, level) == _system_deflate(data, level), level
    stored = pinned_zlib.deflate_raw(data, 0)
    assert zlib.decompress(stored, -15) == data


def test_bad_level_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="level 10"):
        pinned_zlib.deflate_raw(b"x", 10)
    with pytest.raises(FormatError, match="level -1"):
        gzip_member(b"", b"x", -1)


def test_split_and_rebuild_a_gzip_file() -> None:
    for level in (9, 6, 1):
        data = gzip.compress(_TEXT, level, mtime=0)
        split = split_gzip(data, 1 << 20)
        assert split is not None and split.raw == _TEXT
        assert gzip_member(split.header, split.raw, split.level) == data
    odd = _flushed_gzip(_TEXT)
    assert gunzip_exact(odd, 1 << 20) == _TEXT
    assert split_gzip(odd, 1 << 20) is None  # not reproducible: carried as plain content


def _named_gzip(name: str, data: bytes, level: int) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(name, "wb", level, buf, mtime=1_700_000_000) as f:
        f.write(data)
    return buf.getvalue()


@pytest.fixture
def gz_layers(tmp_path: Path) -> tuple[Path, list[SourceLayer]]:
    """A source and target layer with changed .gz files (levels 9, 6, 1; one not reproducible)."""
    news = b"".join(b"NEWS item %d: something changed\n" % i for i in range(1500))
    old = [
        Member("usr", "dir"),
        Member("usr/share/doc/pkg/changelog.Debian.gz", "file", gzip.compress(_TEXT, 9, mtime=0)),
        Member("usr/share/doc/pkg/NEWS.gz", "file", _named_gzip("NEWS", news, 6)),
        Member("usr/share/man/man1/tool.1.gz", "file", gzip.compress(news[:20000], 1, mtime=0)),
        Member("usr/share/doc/pkg/odd.gz", "file", _flushed_gzip(news)),
    ]
    more = b"pkg (2.0) bookworm; urgency=high\n  * security fix\n" + _TEXT
    new = [
        Member("usr", "dir", mtime=5),
        Member("usr/share/doc/pkg/changelog.Debian.gz", "file", gzip.compress(more, 9, mtime=0)),
        Member("usr/share/doc/pkg/NEWS.gz", "file", _named_gzip("NEWS", news + b"v2\n", 6)),
        Member("usr/share/man/man1/tool.1.gz", "file", gzip.compress(news[:20500], 1, mtime=0)),
        Member("usr/share/doc/pkg/odd.gz", "file", _flushed_gzip(news + b"x")),
    ]
    src, tgt = tmp_path / "old.tar", tmp_path / "new.tar"
    src_id = write_layer(src, old, tarfile.GNU_FORMAT)
    write_layer(tgt, new, tarfile.PAX_FORMAT)
    return tgt, [SourceLayer(src_id, src)]


def _build(target: Path, sources: list[SourceLayer]) -> bytes:
    patch = io.BytesIO()
    stats = build_layer_patch(target, sources, patch, config=FAST)
    assert stats.counts.get("gzip_delta") == 3, stats.counts
    return patch.getvalue()


def test_layer_with_gz_files_round_trips_and_names_the_pinned_deflate(
    gz_layers: tuple[Path, list[SourceLayer]],
) -> None:
    target, sources = gz_layers
    patch = _build(target, sources)
    assert read_head(io.BytesIO(patch), 1 << 20, 100).meta.zlib_version == pinned_zlib.VERSION
    out = io.BytesIO()
    apply_layer_patch(io.BytesIO(patch), {s.diff_id: s.path for s in sources}, out)
    assert out.getvalue() == target.read_bytes()


def _with_zlib_version(patch: bytes, version: str | None) -> bytes:
    """The same patch, correctly digested, whose meta names another deflate."""
    head = read_head(io.BytesIO(patch), 1 << 20, 100)
    body = patch[head.meta.sections[0].offset : head.end]
    blob = encode_meta(dataclasses.replace(head.meta, zlib_version=version))
    out = io.BytesIO()
    write_preamble(out, blob, hashlib.sha256(blob + body).digest())
    return out.getvalue() + body


def test_patch_naming_another_deflate_is_refused_before_writing(
    gz_layers: tuple[Path, list[SourceLayer]],
) -> None:
    target, sources = gz_layers
    patch = _build(target, sources)
    mapping = {s.diff_id: s.path for s in sources}
    same = io.BytesIO()
    apply_layer_patch(io.BytesIO(_with_zlib_version(patch, pinned_zlib.VERSION)), mapping, same)
    assert same.getvalue() == target.read_bytes()  # the rewrite itself is sound
    for other in ("1.2.13", "zlib 1.3.1 (cmeel-zlib)"):
        out = io.BytesIO()
        with pytest.raises(FormatError) as info:
            apply_layer_patch(io.BytesIO(_with_zlib_version(patch, other)), mapping, out)
        assert repr(other) in str(info.value) and repr(pinned_zlib.VERSION) in str(info.value)
        assert out.getvalue() == b""


def test_broken_install_fails_before_writing(
    gz_layers: tuple[Path, list[SourceLayer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    target, sources = gz_layers
    patch = _build(target, sources)

    def missing() -> tuple[Path, ctypes.CDLL]:
        raise InstallationError("pinned zlib 1.3.2 not found: reinstall deltaport")

    monkeypatch.setattr(pinned_zlib, "_loaded", missing)
    out = io.BytesIO()
    with pytest.raises(InstallationError, match="reinstall deltaport"):
        apply_layer_patch(io.BytesIO(patch), {s.diff_id: s.path for s in sources}, out)
    assert out.getvalue() == b""
