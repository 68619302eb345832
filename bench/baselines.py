"""The existing tools deltaport is measured against, run on whole `docker save` tars.

Each baseline encodes NEW (optionally against OLD), decodes it again, and checks the
decoded bytes hash to NEW's sha256 — a patch that does not reproduce its input is
reported as not exact, not silently counted. Results are cached (bench/out/cache.json)
keyed by the tool's command shape and the inputs' identity (path, size, mtime), so a
later run with ``--reuse-baselines`` skips minutes of zstd -19 and xdelta3 on 2 GB.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.model import Measurement
from bench.procs import ProcResult, Progress, run_measured

ZSTD_MAX_WINDOW = 1 << 31  # bytes; --long=31 is zstd's largest window: a bigger source fails
XDELTA3_MAX_B = 1 << 31  # bytes; xdelta3 3.0.11 refuses -B above 2 GiB
XDELTA3_MIN_B = 1 << 26  # 64 MiB, xdelta3's own default
BSDIFF_MAX_INPUT = 1 << 30  # bytes; bsdiff needs ~17x its input in RAM: skip above 1 GiB
CACHE_LIMIT = 64 << 20  # bytes; the cache file holds numbers only
CACHE_VERSION = 1

Watch = Callable[[str], Progress]
"""Given a step label ("S2 zstd build"), returns the callback that shows it is alive."""


@dataclass(frozen=True)
class Pair:
    """A baseline's input: the old archive (None: first image) and the new one."""

    old: Path | None
    new: Path
    new_sha256: str


def file_identity(path: Path) -> dict[str, Any]:
    """What makes a cached result valid for a file: its path, size and mtime."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_key(method: str, argv_shape: Sequence[str], pair: Pair) -> str:
    """A stable key for one baseline run: method, command shape, input identities."""
    doc = {
        "v": CACHE_VERSION,
        "method": method,
        "argv": list(argv_shape),
        "old": file_identity(pair.old) if pair.old else None,
        "new": file_identity(pair.new),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


class ResultCache:
    """Measurements by cache key, stored as JSON and rewritten atomically on each put.

    A put re-reads the file first and merges, so two harness runs sharing a cache (say,
    L2 in one process and S1–S3 in another) keep each other's entries.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        if not self.path.is_file() or self.path.stat().st_size > CACHE_LIMIT:
            return {}
        try:
            raw = json.loads(self.path.read_text())
        except ValueError:
            return {}
        if isinstance(raw, dict) and raw.get("version") == CACHE_VERSION:
            return dict(raw.get("entries", {}))
        return {}

    def get(self, key: str) -> Measurement | None:
        raw = self._entries.get(key)
        return Measurement.from_json(raw["measurement"]) if raw else None

    def put(self, key: str, label: str, measurement: Measurement) -> None:
        self._entries = {**self._load(), **self._entries}
        self._entries[key] = {"label": label, "measurement": measurement.to_json()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"version": CACHE_VERSION, "entries": self._entries}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".cache.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


def xdelta3_window(old_size: int) -> int:
    """The -B value: the smallest power of two covering the old file, within xdelta3's range."""
    window = XDELTA3_MIN_B
    while window < old_size and window < XDELTA3_MAX_B:
        window <<= 1
    return window


def zstd_argv(pair: Pair, patch: Path) -> list[str]:
    """Encode command: zstd -19 --long=31, against OLD with --patch-from when there is one."""
    argv = ["zstd", "-19", "--long=31", "-f", "-q"]
    if pair.old is not None:
        argv.append(f"--patch-from={pair.old}")
    return [*argv, str(pair.new), "-o", str(patch)]


def zstd_decode_argv(pair: Pair, patch: Path) -> list[str]:
    argv = ["zstd", "-d", "--long=31", "-c", "-q"]
    if pair.old is not None:
        argv.append(f"--patch-from={pair.old}")
    return [*argv, str(patch)]


def xdelta3_argv(pair: Pair, patch: Path, window: int) -> list[str]:
    assert pair.old is not None
    return ["xdelta3", "-9", "-S", "djw", "-B", str(window), "-e", "-f",
            "-s", str(pair.old), str(pair.new), str(patch)]


def xdelta3_decode_argv(pair: Pair, patch: Path, window: int) -> list[str]:
    assert pair.old is not None
    return ["xdelta3", "-d", "-B", str(window), "-c", "-s", str(pair.old), str(patch)]


class _Hasher:
    """Streams decoded bytes into sha256 and counts them."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0

    def __call__(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        self.size += len(chunk)


def _hash_file(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def _failed(method: str, step: str, res: ProcResult) -> Measurement:
    return Measurement(method, "error", note=f"{step} {res.error()}")


def _encode_decode(
    method: str,
    encode: list[str],
    decode: list[str],
    patch: Path,
    pair: Pair,
    workdir: Path,
    watch: Watch,
    label: str,
) -> Measurement:
    """Run encode, then decode to a stream hashed against NEW; delete the patch after."""
    try:
        enc = run_measured(encode, workdir=workdir / "encode", progress=watch(f"{label} build"))
        if not enc.ok:
            return _failed(method, "build", enc)
        size = patch.stat().st_size
        hasher = _Hasher()
        dec = run_measured(decode, workdir=workdir / "decode", progress=watch(f"{label} apply"),
                           stdout_sink=hasher)
        if not dec.ok:
            return Measurement(method, "error", bytes=size, build_s=enc.wall_s,
                               build_rss=enc.peak_rss, note=f"apply {dec.error()}")
        exact = hasher.sha.hexdigest() == pair.new_sha256.removeprefix("sha256:")
        note = "" if exact else "decoded bytes differ from NEW"
        return Measurement(method, "ok", size, enc.wall_s, enc.peak_rss, dec.wall_s,
                           dec.peak_rss, exact, note=note)
    finally:
        patch.unlink(missing_ok=True)


def run_zstd(
    pair: Pair, workdir: Path, watch: Watch, label: str, *, try_large: bool
) -> Measurement:
    """zstd -19 --long=31 [--patch-from=OLD] NEW; 'fails' past the 2 GiB window unless tried."""
    if pair.old is not None and pair.old.stat().st_size > ZSTD_MAX_WINDOW and not try_large:
        return Measurement("zstd", "fails", note="source over zstd's 2 GiB --long=31 window "
                           "(not run; --try-zstd-large runs it)")
    patch = workdir / "zstd.patch"
    res = _encode_decode("zstd", zstd_argv(pair, patch), zstd_decode_argv(pair, patch),
                         patch, pair, workdir / "zstd", watch, f"{label} zstd")
    if pair.old is None and res.ok and not res.note:
        return Measurement(res.method, res.status, res.bytes, res.build_s, res.build_rss,
                           res.apply_s, res.apply_rss, res.exact,
                           "no source: plain zstd -19 --long=31 of the whole image", res.extra)
    return res


def run_xdelta3(pair: Pair, workdir: Path, watch: Watch, label: str) -> Measurement:
    """xdelta3 -9 -S djw -B <window covering OLD> -e -s OLD NEW (needs an OLD)."""
    if pair.old is None:
        return Measurement("xdelta3", "skipped", note="no source image")
    window = xdelta3_window(pair.old.stat().st_size)
    patch = workdir / "xdelta3.patch"
    res = _encode_decode("xdelta3", xdelta3_argv(pair, patch, window),
                         xdelta3_decode_argv(pair, patch, window), patch, pair,
                         workdir / "xdelta3", watch, f"{label} xdelta3")
    return _with_extra(res, {"window": window})


def _with_extra(m: Measurement, extra: dict[str, Any]) -> Measurement:
    return Measurement(m.method, m.status, m.bytes, m.build_s, m.build_rss, m.apply_s,
                       m.apply_rss, m.exact, m.note, {**m.extra, **extra})


def run_bsdiff(pair: Pair, workdir: Path, watch: Watch, label: str) -> Measurement:
    """bsdiff OLD NEW PATCH, then bspatch to a file that is hashed and deleted."""
    if pair.old is None:
        return Measurement("bsdiff", "skipped", note="no source image")
    biggest = max(pair.old.stat().st_size, pair.new.stat().st_size)
    if biggest > BSDIFF_MAX_INPUT:
        return Measurement("bsdiff", "skipped", note="input over 1 GiB: bsdiff needs ~17x in RAM")
    work = workdir / "bsdiff"
    patch, rebuilt = work / "bsdiff.patch", work / "rebuilt.tar"
    work.mkdir(parents=True, exist_ok=True)
    try:
        enc = run_measured(["bsdiff", str(pair.old), str(pair.new), str(patch)],
                           workdir=work / "encode", progress=watch(f"{label} bsdiff build"))
        if not enc.ok:
            return _failed("bsdiff", "build", enc)
        size = patch.stat().st_size
        dec = run_measured(["bspatch", str(pair.old), str(rebuilt), str(patch)],
                           workdir=work / "decode", progress=watch(f"{label} bsdiff apply"))
        if not dec.ok:
            return Measurement("bsdiff", "error", bytes=size, build_s=enc.wall_s,
                               build_rss=enc.peak_rss, note=f"apply {dec.error()}")
        exact = _hash_file(rebuilt) == pair.new_sha256.removeprefix("sha256:")
        return Measurement("bsdiff", "ok", size, enc.wall_s, enc.peak_rss, dec.wall_s,
                           dec.peak_rss, exact, note="" if exact else "bspatch output differs")
    finally:
        patch.unlink(missing_ok=True)
        rebuilt.unlink(missing_ok=True)


def shape_for(method: str, pair: Pair) -> list[str]:
    """The command shape a cached result depends on (paths left out: identities cover them)."""
    if method == "zstd":
        return ["zstd", "-19", "--long=31", "--patch-from" if pair.old else "(no source)"]
    if method == "xdelta3":
        size = pair.old.stat().st_size if pair.old else 0
        return ["xdelta3", "-9", "-S", "djw", "-B", str(xdelta3_window(size)), "-e"]
    if method == "bsdiff":
        return ["bsdiff"]
    raise ValueError(f"no cached shape for {method}")


def cached_run(
    cache: ResultCache,
    method: str,
    pair: Pair,
    reuse: bool,
    label: str,
    run: Callable[[], Measurement],
) -> Measurement:
    """Return the cached measurement when ``reuse`` and one exists; else run and store it.

    Only successful, exact runs are stored: a failure is worth re-running next time.
    """
    key = cache_key(method, shape_for(method, pair), pair)
    if reuse and (hit := cache.get(key)) is not None:
        return _with_extra(hit, {"cached": True})
    result = run()
    if result.status == "ok" and result.exact:
        cache.put(key, label, result)
    return result
