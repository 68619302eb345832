"""deltaport benchmark harness: every method, every scenario, measured in one run.

    python bench/run.py --data /work/benchdata/public [--scenarios S0,S1,S2,S3,L2]
        [--skip-tools xdelta3,...] [--reuse-baselines] [--try-zstd-large] --out bench/

Per scenario (old → new from the corpus's scenarios.json): deltaport's bundle through
its real CLI (create + apply + byte-exact check), zstd -19 --long=31 --patch-from and
xdelta3 -9 -S djw on the whole docker-save tars (decoded again and checked), bsdiff on
S2 only, and the gzip layers a registry pull would send. Writes RESULTS.md and
results.json into --out; scratch files and the baseline cache go to --out/out/.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import platform
import shlex
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress as RichProgress
from rich.progress import SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench import report
from bench.baselines import (
    Pair,
    ResultCache,
    cached_run,
    run_bsdiff,
    run_xdelta3,
    run_zstd,
)
from bench.corpus import Corpus, CorpusError, Scenario, load_corpus, registry_pull_bytes
from bench.deltaport_run import DeltaportCli, run_deltaport
from bench.model import METHOD_LABELS, Measurement
from bench.procs import Progress

REPO = Path(__file__).resolve().parent.parent
TOOLS = ("deltaport", "zstd", "xdelta3", "bsdiff")
BSDIFF_SCENARIOS = frozenset({"S2"})
QUIET_LOG_EVERY_S = 30.0  # without a terminal, say a step is alive this often


@dataclass(frozen=True)
class Options:
    """Parsed command line."""

    data: Path
    out: Path
    work: Path
    scenarios: tuple[str, ...] | None
    skip: frozenset[str]
    reuse_baselines: bool
    try_zstd_large: bool
    deltaport: DeltaportCli
    argv: tuple[str, ...]
    plan_json: Path | None = None
    rerender: bool = False


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--data", type=Path, required=True, help="corpus dir with images.json")
    p.add_argument("--out", type=Path, default=REPO / "bench", help="where RESULTS.md goes")
    p.add_argument("--work", type=Path, default=None, help="scratch dir (default OUT/out)")
    p.add_argument("--scenarios", default="", help="comma list, e.g. S1,S2 (default: all)")
    p.add_argument("--skip-tools", default="", help=f"comma list of {','.join(TOOLS)}")
    p.add_argument("--reuse-baselines", action="store_true",
                   help="reuse cached zstd/xdelta3/bsdiff results for unchanged inputs")
    p.add_argument("--try-zstd-large", action="store_true",
                   help="run zstd --patch-from even when the source is over its 2 GiB window")
    p.add_argument("--deltaport", type=Path, default=REPO / ".venv" / "bin" / "deltaport")
    p.add_argument("--apply-dest", choices=("docker-archive", "oci"), default="docker-archive")
    p.add_argument("--plan-json", type=Path, default=None,
                   help="results of bench/plan_bench.py --json, reported in RESULTS.md")
    p.add_argument("--rerender", action="store_true",
                   help="measure nothing: write OUT/RESULTS.md again from OUT/results.json "
                        "(after a change of the report or its targets)")
    a = p.parse_args(list(argv))
    skip = frozenset(t for t in a.skip_tools.split(",") if t)
    if unknown := skip - set(TOOLS):
        p.error(f"unknown tool(s) in --skip-tools: {', '.join(sorted(unknown))}")
    scenarios = tuple(s for s in a.scenarios.split(",") if s) or None
    return Options(a.data, a.out, a.work or a.out / "out", scenarios, skip, a.reuse_baselines,
                   a.try_zstd_large, DeltaportCli(a.deltaport, a.apply_dest), tuple(argv),
                   a.plan_json, a.rerender)


class Watcher:
    """Shows each running step with elapsed time and live RSS, so a human sees it is alive."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = RichProgress(SpinnerColumn(), TextColumn("{task.description}"),
                                     TimeElapsedColumn(), console=console, transient=True)
        self._task: TaskID | None = None
        self._label = ""
        self._last_log = 0.0

    def __enter__(self) -> Watcher:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done()
        self.progress.stop()

    def done(self) -> None:
        if self._task is not None:
            self.progress.remove_task(self._task)
            self._task = None

    def __call__(self, label: str) -> Progress:
        self.done()
        self._label = label
        self._task = self.progress.add_task(label)
        self._last_log = time.monotonic()
        if not self.console.is_terminal:
            self.console.print(f"… {label}", highlight=False)
        return self._update

    def _update(self, elapsed: float, rss: int) -> None:
        text = f"{self._label}  [dim]RSS {rss / report.MIB:.0f} MiB[/]"
        if self._task is not None:
            self.progress.update(self._task, description=text)
        now = time.monotonic()
        if not self.console.is_terminal and now - self._last_log >= QUIET_LOG_EVERY_S:
            self._last_log = now
            mib = rss / report.MIB
            self.console.print(f"  … {self._label}: {elapsed:.0f} s, RSS {mib:.0f} MiB",
                               highlight=False)


def _guarded(method: str, fn: Callable[[], Measurement]) -> Measurement:
    """Run one method; a bug in the harness or a tool becomes an error row, not a crash."""
    try:
        return fn()
    except Exception as exc:
        detail = traceback.format_exception_only(exc)[-1].strip()
        return Measurement(method, "error", note=f"harness: {detail}")


def _stamp(m: Measurement) -> Measurement:
    if m.status != "ok" or "measured_at" in m.extra:
        return m
    extra = {**m.extra, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
             "loadavg_1m_after": round(os.getloadavg()[0], 2)}
    return Measurement(m.method, m.status, m.bytes, m.build_s, m.build_rss, m.apply_s,
                       m.apply_rss, m.exact, m.note, extra)


def measure_scenario(scen: Scenario, corpus: Corpus, opts: Options, cache: ResultCache,
                     watch: Watcher) -> dict[str, Measurement]:
    """Every method on one scenario, in the order of the report."""
    new = corpus.images[scen.new]
    old = corpus.images[scen.old] if scen.old else None
    pair = Pair(old.archive if old else None, new.archive, new.archive_sha256)
    work = opts.work / scen.id
    results: dict[str, Measurement] = {}

    def tool(method: str, run: Callable[[], Measurement], cacheable: bool = True) -> None:
        if method in opts.skip:
            results[method] = Measurement(method, "skipped", note="--skip-tools")
            return
        if cacheable:
            def run_cached() -> Measurement:
                return cached_run(cache, method, pair, opts.reuse_baselines,
                                  f"{scen.id} {method}", lambda: _stamp(run()))
            results[method] = _guarded(method, run_cached)
        else:
            results[method] = _guarded(method, lambda: _stamp(run()))
        watch.done()
        _print_line(watch.console, scen.id, results[method], new.archive_size)

    tool("deltaport", lambda: run_deltaport(opts.deltaport, new, old, work / "deltaport",
                                            watch, scen.id), cacheable=False)
    tool("zstd", lambda: run_zstd(pair, work, watch, scen.id, try_large=opts.try_zstd_large))
    if old is not None:
        tool("xdelta3", lambda: run_xdelta3(pair, work, watch, scen.id))
    else:
        results["xdelta3"] = Measurement("xdelta3", "skipped", note="no source image")
    if scen.id in BSDIFF_SCENARIOS:
        tool("bsdiff", lambda: run_bsdiff(pair, work, watch, scen.id))
    else:
        results["bsdiff"] = Measurement(
            "bsdiff", "skipped", note="run on S2 only: ~17× input in RAM and ~2 MB/s")
    results["gzip-layers"] = Measurement("gzip-layers", "ok", registry_pull_bytes(new, old),
                                         note="gzip -6 blobs of layers whose diff_id the "
                                              "device lacks; manifest+config not counted")
    return results


def _print_line(console: Console, sid: str, m: Measurement, target: int) -> None:
    if m.ok:
        exact = {True: "byte-exact", False: "[red]NOT exact[/]", None: ""}[m.exact]
        console.print(f"  {sid} {METHOD_LABELS[m.method]}: {report.fmt_bytes(m.bytes)} "
                      f"({report.fmt_pct(m.bytes, target)}) build {report.fmt_seconds(m.build_s)} "
                      f"apply {report.fmt_seconds(m.apply_s)} {exact}"
                      + (" (cached)" if m.extra.get("cached") else ""), highlight=False)
    else:
        note = escape(m.note if len(m.note) <= 300 else "…" + m.note[-300:])
        console.print(f"  {sid} {METHOD_LABELS[m.method]}: [yellow]{m.status}[/] {note}",
                      highlight=False)


# -- environment facts -------------------------------------------------------------------

def _cmd_output(argv: Sequence[str]) -> str:
    try:
        res = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, cwd=REPO)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (res.stdout or res.stderr).strip()


def machine_info() -> dict[str, Any]:
    cpu = ""
    meminfo = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
        meminfo = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "mem_total": meminfo,
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def git_info() -> dict[str, Any]:
    commit = _cmd_output(["git", "rev-parse", "HEAD"])
    dirty = bool(_cmd_output(["git", "status", "--porcelain", "--untracked-files=no"]))
    return {"commit": commit, "dirty": dirty}


def _first_line(text: str) -> str:
    return (text.splitlines() or [""])[0]


def tool_versions() -> dict[str, str]:
    return {
        "zstd": _first_line(_cmd_output(["zstd", "--version"])),
        "xdelta3": _first_line(_cmd_output(["xdelta3", "-V"])),
        "bsdiff": _cmd_output(["dpkg-query", "-W", "-f", "${Version}", "bsdiff"]),
    }


# -- writing -----------------------------------------------------------------------------

def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def results_doc(opts: Options, meta: dict[str, Any], scens: Sequence[report.ScenarioResult],
                checks: Sequence[report.TargetCheck]) -> dict[str, Any]:
    return {
        **meta,
        "command": "python bench/run.py " + shlex.join(opts.argv),
        "units": {"bytes": "bytes", "time": "wall seconds", "rss": "peak bytes",
                  "pct": "of target docker-save size"},
        "scenarios": {s.id: {"old": s.old, "new": s.new, "desc": s.desc,
                             "target_size": s.target_size,
                             "results": {k: v.to_json() for k, v in s.results.items()}}
                      for s in scens},
        "targets": [c.__dict__ for c in checks],
    }


def results_markdown(opts: Options, meta: dict[str, Any],
                     scens: Sequence[report.ScenarioResult],
                     checks: Sequence[report.TargetCheck]) -> str:
    m, g = meta["machine"], meta["git"]
    lines = [
        "# deltaport benchmark results", "",
        f"Run {meta['date']} on {m['nproc']} cores ({m['cpu_model']}, {m['mem_total']} RAM), "
        f"deltaport commit `{g['commit'][:12]}`"
        f"{' (with uncommitted changes)' if g['dirty'] else ''}.",
        f"Command: `python bench/run.py {shlex.join(opts.argv)}`. Raw numbers: `results.json`.",
        "",
        "Bytes are what a device must receive, as % of the target image's `docker save` "
        "archive (the reference article's convention). \"best tool\" is the smaller of zstd "
        "and xdelta3 on the same pair in this run. Speeds are MB (10^6 bytes) of target "
        "image per wall second; memory is peak RSS of the process tree. Times depend on "
        f"what else the machine ran: load average at start {m['loadavg_at_start']}; each "
        "measurement's own is in results.json (`loadavg_1m_after`).", "",
        "## Bytes sent (% of target docker-save size)", "",
        *report.summary_table(scens), "",
        "## Targets", "", *report.targets_section(checks), "",
        *notes_section(),
        "## Chart (bytes sent, log scale from 1 KB)", "", "```", *report.chart_lines(scens),
        "```", "",
        "## Per scenario", "",
    ]
    for scen in scens:
        lines += report.scenario_section(scen)
    if opts.plan_json is not None and opts.plan_json.is_file():
        lines += plan_section(json.loads(opts.plan_json.read_text()))
    lines += [
        "## How each number is measured", "",
        "- **deltaport**: `deltaport delta create --to docker-archive:NEW --from "
        "docker-archive:OLD --sign-key KEY -o BUNDLE --json` (no `--from` for S0); bytes = "
        "bundle file size, Ed25519 signature included. "
        "`deltaport delta apply BUNDLE --from docker-archive:OLD --trust-key PUB "
        f"--to {opts.deltaport.apply_dest}:…`; "
        "the rebuilt image is checked independently (bench/verify.py): config sha256 = "
        "target image ID, every layer's uncompressed sha256 = target diff_id.",
        "- **zstd**: `zstd -19 --long=31 --patch-from=OLD NEW` (S0: no `--patch-from`); "
        "decoded with `zstd -d --long=31 --patch-from=OLD` and hashed against NEW. "
        "A source over 2 GiB exceeds zstd's largest window: reported as \"fails\".",
        "- **xdelta3**: `xdelta3 -9 -S djw -B W -e -s OLD NEW` with W the smallest power of "
        "two ≥ OLD (capped at xdelta3's 2 GiB maximum); decoded with `-d -B W` and hashed.",
        "- **bsdiff** (Debian bsdiff 4.3): S2 only — it needs ~17× its input in RAM and runs "
        "at ~2 MB/s; decoded with bspatch and hashed.",
        "- **gzip layers**: sum of the gzip (-6) blob sizes of the target's layers whose "
        "diff_id the device does not have — what `docker pull` would transfer.",
        "- Time is wall time; peak RSS is the larger of the kernel's `ru_maxrss` (wait4) and "
        "the polled sum over the process tree.", "",
    ]
    return "\n".join(lines)


NOTES = REPO / "bench" / "NOTES.md"


def notes_section() -> list[str]:
    """bench/NOTES.md (hand-written, dated: why a target is missed, what was tried)."""
    if not NOTES.is_file():
        return []
    return [NOTES.read_text().rstrip(), ""]


def plan_section(doc: dict[str, Any]) -> list[str]:
    """The fleet planning / status ingestion figures of bench/plan_bench.py."""
    rows = [
        [backend, str(r["devices"]), str(r["bundles"]), f"{r['planning_s']:.1f} s",
         "met" if r["planning_s"] < 30 else "NOT met", f"{r['record_s']:.1f} s",
         f"{r['ingest_per_s']:,.0f}/s", "met" if r["ingest_per_s"] >= 2000 else "NOT met"]
        for backend, r in doc.items()
    ]
    return [
        "## Fleet planning and status ingestion", "",
        "`python bench/plan_bench.py --devices 100000 --messages 20000`: a simulated fleet "
        "with realistic inventory mixes and a deployment of 5 images, planned without "
        "building bundles (targets: planning < 30 s; ingestion ≥ 2,000 messages/s).", "",
        *report.md_table(["backend", "devices", "distinct bundles", "planning",
                          "< 30 s", "recording in_transit", "status ingestion",
                          "≥ 2,000/s"], rows), "",
    ]


def print_terminal(console: Console, scens: Sequence[report.ScenarioResult],
                   checks: Sequence[report.TargetCheck]) -> None:
    chart = Table(title="bytes sent (log scale from 1 KB)", show_header=False, box=None)
    for bar in report.chart_bars(scens):
        size = next(s.target_size for s in scens if s.id == bar.scenario)
        colour = "green" if bar.method == "deltaport" else "cyan"
        chart.add_row(bar.scenario, bar.method, f"[{colour}]{report.bar_text(bar.length)}[/]",
                      f"{report.fmt_bytes(bar.bytes)} ({report.fmt_pct(bar.bytes, size)})")
    console.print(chart)
    targets = Table(title="targets")
    for col in ("scenario", "requirement", "measured", "status"):
        targets.add_column(col)
    for c in checks:
        style = {"met": "green", "NOT met": "red", "not measured": "yellow"}[c.status]
        targets.add_row(c.scenario, c.requirement, c.measured, f"[{style}]{c.status}[/]")
    console.print(targets)


def rerender(opts: Options) -> int:
    """RESULTS.md written again from results.json: the same run, today's report code."""
    doc = json.loads((opts.out / "results.json").read_text())
    meta = {k: doc[k] for k in ("date", "machine", "git", "tools")}
    scens = [
        report.ScenarioResult(sid, s["old"], s["new"], s["desc"], s["target_size"],
                              {k: Measurement.from_json(v) for k, v in s["results"].items()})
        for sid, s in doc["scenarios"].items()
    ]
    measured = shlex.split(doc["command"].removeprefix("python bench/run.py "))
    _write_outputs(replace(opts, argv=tuple(measured), rerender=False), meta, scens)
    return 0


def main(argv: Sequence[str]) -> int:
    opts = parse_args(argv)
    if opts.rerender:
        return rerender(opts)
    console = Console()
    try:
        corpus = load_corpus(opts.data)
        chosen = [corpus.scenario(s) for s in opts.scenarios] if opts.scenarios else list(
            corpus.scenarios)
    except CorpusError as exc:
        console.print(f"[red]corpus:[/] {exc}", highlight=False)
        return 2
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine_info(),
            "git": git_info(), "tools": tool_versions()}
    cache = ResultCache(opts.work / "cache.json")
    done: list[report.ScenarioResult] = []
    with Watcher(console) as watch:
        for scen in chosen:
            size = corpus.images[scen.new].archive_size
            title = f"{scen.id}: {scen.old or 'nothing'} → {scen.new} ({report.fmt_bytes(size)})"
            console.rule(title)
            results = measure_scenario(scen, corpus, opts, cache, watch)
            done.append(
                report.ScenarioResult(scen.id, scen.old, scen.new, scen.desc, size, results))
            _write_outputs(opts, meta, done)
    checks = report.all_checks(done)
    print_terminal(console, done, checks)
    console.print(f"wrote {opts.out / 'RESULTS.md'} and {opts.out / 'results.json'}")
    return 0


def _write_outputs(opts: Options, meta: dict[str, Any],
                   scens: Sequence[report.ScenarioResult]) -> None:
    """Write RESULTS.md and results.json (after every scenario, so a long run keeps its work)."""
    checks = report.all_checks(scens)
    _write_atomic(opts.out / "results.json",
                  json.dumps(results_doc(opts, meta, scens, checks), indent=1) + "\n")
    _write_atomic(opts.out / "RESULTS.md", results_markdown(opts, meta, scens, checks))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
