"""The real zstd, xdelta3 and bsdiff on small files, the result cache, and the gzip-pull sum."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
from bench.baselines import Pair, ResultCache, cached_run, xdelta3_window
from bench.corpus import CorpusError, load_corpus, registry_pull_bytes
from bench.model import Measurement
from bench.procs import Progress

from bench import baselines


def no_watch(_label: str) -> Progress:
    return lambda _t, _rss: None


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    rng = random.Random(7)
    old = bytes(rng.getrandbits(8) for _ in range(200_000))
    new = old[:50_000] + b"EDITED" * 10 + old[50_000:]
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    return Pair(tmp_path / "old", tmp_path / "new", hashlib.sha256(new).hexdigest())


@pytest.mark.parametrize("method", ["zstd", "xdelta3", "bsdiff"])
def test_tool_encodes_small_delta_and_decodes_exactly(method: str, pair: Pair,
                                                      tmp_path: Path) -> None:
    work = tmp_path / "work"
    if method == "zstd":
        m = baselines.run_zstd(pair, work, no_watch, "T", try_large=False)
    elif method == "xdelta3":
        m = baselines.run_xdelta3(pair, work, no_watch, "T")
    else:
        m = baselines.run_bsdiff(pair, work, no_watch, "T")
    assert m.status == "ok", m.note
    assert m.exact is True
    assert m.bytes is not None and m.bytes < 5_000  # a delta, not a copy of 200 KB of noise
    assert m.build_s is not None and m.apply_rss is not None and m.apply_rss > 0
    assert not list(work.rglob("*.patch")), "patch files are deleted after measuring"


def test_wrong_expected_hash_is_reported_not_exact(pair: Pair, tmp_path: Path) -> None:
    lying = Pair(pair.old, pair.new, "0" * 64)
    m = baselines.run_xdelta3(lying, tmp_path / "w", no_watch, "T")
    assert m.status == "ok" and m.exact is False and "differ" in m.note


def test_zstd_without_source_is_plain_compression(pair: Pair, tmp_path: Path) -> None:
    first = Pair(None, pair.new, pair.new_sha256)
    m = baselines.run_zstd(first, tmp_path / "w", no_watch, "T", try_large=False)
    assert m.ok and m.exact and m.bytes is not None and m.bytes > 150_000  # noise: no source
    assert baselines.run_xdelta3(first, tmp_path / "w", no_watch, "T").status == "skipped"


def test_zstd_past_its_window_fails_unless_tried(pair: Pair, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baselines, "ZSTD_MAX_WINDOW", 1000)
    m = baselines.run_zstd(pair, tmp_path / "w", no_watch, "T", try_large=False)
    assert m.status == "fails" and "2 GiB" in m.note
    tried = baselines.run_zstd(pair, tmp_path / "w", no_watch, "T", try_large=True)
    assert tried.ok


def test_tool_failure_is_an_error_row(pair: Pair, tmp_path: Path) -> None:
    bad = Pair(pair.old, tmp_path / "no-such-new", pair.new_sha256)
    m = baselines.run_zstd(bad, tmp_path / "w", no_watch, "T", try_large=False)
    assert m.status == "error" and m.note.startswith("build exit")
    assert "zstd: error" in m.note  # the tool's own message, from the end of its stderr


def test_xdelta3_window_covers_the_source_within_limits() -> None:
    assert xdelta3_window(10) == 1 << 26
    assert xdelta3_window(329_379_840) == 1 << 29
    assert xdelta3_window(2_300_000_000) == 1 << 31


def test_cache_reuses_only_for_same_inputs(pair: Pair, tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "out" / "cache.json")
    calls: list[int] = []

    def run() -> Measurement:
        calls.append(1)
        return Measurement("xdelta3", "ok", 123, 1.0, 10, 0.5, 5, True)

    first = cached_run(cache, "xdelta3", pair, True, "S9 xdelta3", run)
    again = cached_run(ResultCache(tmp_path / "out" / "cache.json"), "xdelta3", pair, True,
                       "S9 xdelta3", run)
    assert len(calls) == 1 and again.bytes == first.bytes == 123 and again.extra["cached"]
    cached_run(cache, "xdelta3", pair, False, "S9 xdelta3", run)  # no --reuse-baselines
    assert len(calls) == 2
    st = pair.new.stat()
    os.utime(pair.new, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # input changed
    cached_run(cache, "xdelta3", pair, True, "S9 xdelta3", run)
    assert len(calls) == 3


def test_two_caches_on_one_file_keep_each_others_entries(tmp_path: Path) -> None:
    one, two = ResultCache(tmp_path / "c.json"), ResultCache(tmp_path / "c.json")
    one.put("a", "A", Measurement("zstd", "ok", 1, exact=True))
    two.put("b", "B", Measurement("xdelta3", "ok", 2, exact=True))
    again = ResultCache(tmp_path / "c.json")
    assert again.get("a") is not None and again.get("b") is not None


def test_failures_are_not_cached(pair: Pair, tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache.json")
    calls: list[int] = []

    def run() -> Measurement:
        calls.append(1)
        return Measurement("zstd", "error", note="exit 1")

    cached_run(cache, "zstd", pair, True, "S9 zstd", run)
    cached_run(cache, "zstd", pair, True, "S9 zstd", run)
    assert len(calls) == 2


def test_registry_pull_counts_only_missing_layers(tiny_corpus: Path) -> None:
    corpus = load_corpus(tiny_corpus)
    v1, v2 = corpus.images["app-v1"], corpus.images["app-v2"]
    assert registry_pull_bytes(v2, None) == sum(layer.gz_size for layer in v2.layers)
    assert registry_pull_bytes(v2, v1) == v2.layers[1].gz_size  # the base layer is shared
    assert registry_pull_bytes(v1, v1) == 0


def test_corpus_errors_are_clear(tmp_path: Path, tiny_corpus: Path) -> None:
    with pytest.raises(CorpusError, match="corpus-done"):
        load_corpus(tmp_path / "nowhere")
    (tiny_corpus / "scenarios.json").write_text('[{"id": "X", "old": "ghost", "new": "app-v1"}]')
    with pytest.raises(CorpusError, match="ghost"):
        load_corpus(tiny_corpus)
    (tiny_corpus / "scenarios.json").write_text('[{"id": "S0", "old": null, "new": "app-v1"}]')
    with pytest.raises(CorpusError, match="unknown scenario 'S7'"):
        load_corpus(tiny_corpus).scenario("S7")
