"""Pure reporting: number formats, the target checks, RESULTS.md tables, a text bar chart.

Everything here takes measurements (values) and returns strings or verdicts; no I/O.
Conventions: bytes in SI units (1 MB = 10^6 bytes, like the reference article), sizes
as % of the target image's `docker save` archive, memory in MiB (2^20 bytes), speed as
MB of target image per second of wall time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from bench.model import METHOD_LABELS, METHODS, Measurement

MIB = 1 << 20
BUILD_MIN_MBPS = 10.0
APPLY_MIN_MBPS = 50.0
L2_APPLY_RSS_MAX = 256 * MIB

TargetStatus = Literal["met", "NOT met", "not measured"]


@dataclass(frozen=True)
class ScenarioResult:
    """All measurements of one scenario, with what the report needs to know about it."""

    id: str
    old: str | None
    new: str
    desc: str
    target_size: int  # bytes of the target's docker-save archive
    results: Mapping[str, Measurement]

    def get(self, method: str) -> Measurement | None:
        return self.results.get(method)


@dataclass(frozen=True)
class TargetCheck:
    """One row of the targets table."""

    scenario: str
    requirement: str
    measured: str
    status: TargetStatus


# -- number formats ----------------------------------------------------------------------

def fmt_bytes(n: int | None) -> str:
    """SI bytes with 3 significant digits: 5.6 KB, 329 MB, 2.31 GB."""
    if n is None:
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{_sig3(n / scale)} {unit}"
    return f"{n} B"


def _sig3(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_pct(part: int | None, whole: int) -> str:
    """Part as % of whole with 3 significant digits and no exponent: 33.4%, 0.00171%."""
    if part is None or whole <= 0:
        return "—"
    pct = 100.0 * part / whole
    if pct == 0:
        return "0%"
    decimals = max(0, 2 - math.floor(math.log10(pct)))
    return f"{pct:.{decimals}f}%"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 60:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {s % 60:02.0f} s"


def mbps(size: int, seconds: float | None) -> float | None:
    """MB (10^6 bytes) of ``size`` per second; None when not measured."""
    if seconds is None or seconds <= 0:
        return None
    return size / 1e6 / seconds


def fmt_mbps(size: int, seconds: float | None) -> str:
    rate = mbps(size, seconds)
    return "—" if rate is None else f"{rate:.1f} MB/s"


def fmt_rss(n: int | None) -> str:
    return "—" if n is None else f"{n / MIB:.0f} MiB"


def fmt_exact(m: Measurement) -> str:
    return {True: "yes", False: "NO", None: "—"}[m.exact]


# -- target checks -----------------------------------------------------------------------

def usable(m: Measurement | None) -> int | None:
    """Bytes of a measurement that counts: ran, and (if checkable) reproduced its target."""
    if m is None or not m.ok or m.exact is False:
        return None
    return m.bytes


def best_tool(scen: ScenarioResult) -> tuple[str, int] | None:
    """The smaller of zstd --patch-from and xdelta3 on this pair, this run."""
    found = [(usable(scen.get(t)), t) for t in ("zstd", "xdelta3")]
    sizes = [(b, t) for b, t in found if b is not None]
    if not sizes:
        return None
    b, t = min(sizes)
    return t, b


def _ratio_check(scen: ScenarioResult, factor: float, ref: tuple[str, int] | None,
                 ref_name: str) -> TargetCheck:
    req = f"≤ {factor:g} × {ref_name}"
    dp = usable(scen.get("deltaport"))
    if ref is None or dp is None:
        missing = "deltaport" if dp is None else ref_name
        return TargetCheck(scen.id, req, f"{missing} not measured", "not measured")
    limit = factor * ref[1]
    measured = (f"{fmt_bytes(dp)} vs {fmt_bytes(ref[1])} ({ref[0]}) = "
                f"{dp / ref[1]:.3f}×")
    return TargetCheck(scen.id, req, measured, "met" if dp <= limit else "NOT met")


def _tool_ref(scen: ScenarioResult, tool: str) -> tuple[str, int] | None:
    b = usable(scen.get(tool))
    return None if b is None else (tool, b)


def _rss_check(scen: ScenarioResult) -> TargetCheck:
    req = f"apply peak RSS < {L2_APPLY_RSS_MAX // MIB} MiB"
    m = scen.get("deltaport")
    if m is None or not m.ok or m.apply_rss is None:
        return TargetCheck(scen.id, req, "deltaport apply not measured", "not measured")
    status: TargetStatus = "met" if m.apply_rss < L2_APPLY_RSS_MAX else "NOT met"
    return TargetCheck(scen.id, req, fmt_rss(m.apply_rss), status)


def scenario_checks(scen: ScenarioResult) -> list[TargetCheck]:
    """The issue's size/memory targets for one scenario (none for unknown ids)."""
    best = best_tool(scen)
    rules = {
        "S0": lambda: [_ratio_check(scen, 0.95, _tool_ref(scen, "zstd"), "zstd -19 --long=31")],
        # issue 16's targets, on every corpus
        "S1": lambda: [_ratio_check(scen, 0.88, best, "best tool")],
        "S2": lambda: [_ratio_check(scen, 0.5, best, "best tool"),
                       _ratio_check(scen, 0.9, _tool_ref(scen, "bsdiff"), "bsdiff")],
        "S3": lambda: [_ratio_check(scen, 0.5, best, "best tool")],
        "L2": lambda: [_ratio_check(scen, 0.2, _tool_ref(scen, "xdelta3"), "xdelta3"),
                       _rss_check(scen)],
    }
    rule = rules.get(scen.id)
    return rule() if rule else []


def speed_check(scens: Sequence[ScenarioResult], phase: Literal["build", "apply"],
                minimum: float) -> TargetCheck:
    """Every scenario's deltaport build (or apply) reaches ``minimum`` MB/s of target."""
    rates: list[tuple[float, str]] = []
    for scen in scens:
        m = scen.get("deltaport")
        if m is None or not m.ok:
            continue
        rate = mbps(scen.target_size, m.build_s if phase == "build" else m.apply_s)
        if rate is not None:
            rates.append((rate, scen.id))
    req = f"{phase} ≥ {minimum:g} MB/s of target"
    if not rates:
        return TargetCheck("all", req, f"deltaport {phase} not measured", "not measured")
    listed = ", ".join(f"{sid} {r:.1f}" for r, sid in rates)
    slowest = min(rates)
    status: TargetStatus = "met" if slowest[0] >= minimum else "NOT met"
    unmeasured = len(rates) < len(scens)
    measured = f"slowest {slowest[1]} {slowest[0]:.1f} MB/s ({listed})"
    if unmeasured and status == "met":
        return TargetCheck("all", req, measured + "; some scenarios not measured", "not measured")
    return TargetCheck("all", req, measured, status)


def all_checks(scens: Sequence[ScenarioResult]) -> list[TargetCheck]:
    checks = [c for scen in scens for c in scenario_checks(scen)]
    checks.append(speed_check(scens, "build", BUILD_MIN_MBPS))
    checks.append(speed_check(scens, "apply", APPLY_MIN_MBPS))
    return checks


# -- tables ------------------------------------------------------------------------------

SCENARIO_HEADER = ("method", "bytes", "% of target", "build", "build speed", "build peak RSS",
                   "apply", "apply speed", "apply peak RSS", "byte-exact", "note")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def scenario_row(m: Measurement, target_size: int) -> list[str]:
    """One method's row: the failure reason stands in for bytes when it did not run."""
    label = METHOD_LABELS.get(m.method, m.method)
    if m.status != "ok":
        reason = {"error": "error", "skipped": "skipped", "fails": "fails"}[m.status]
        return [label, reason, "—", *["—"] * 6, fmt_exact(m), f"{reason}: {m.note}"]
    note = m.note
    if m.extra.get("cached"):
        when = m.extra.get("measured_at", "an earlier run")
        note = (note + "; " if note else "") + f"cached from {when}"
    return [
        label, fmt_bytes(m.bytes), fmt_pct(m.bytes, target_size),
        fmt_seconds(m.build_s), fmt_mbps(target_size, m.build_s), fmt_rss(m.build_rss),
        fmt_seconds(m.apply_s), fmt_mbps(target_size, m.apply_s), fmt_rss(m.apply_rss),
        fmt_exact(m), note,
    ]


def scenario_section(scen: ScenarioResult) -> list[str]:
    old = scen.old or "nothing"
    lines = [f"### {scen.id}: {old} → {scen.new}", "",
             f"{scen.desc}. Target `docker save` size: {fmt_bytes(scen.target_size)} "
             f"({scen.target_size} bytes).", ""]
    rows = [scenario_row(scen.results[m], scen.target_size) for m in METHODS if m in scen.results]
    return [*lines, *md_table(SCENARIO_HEADER, rows), ""]


def targets_section(checks: Sequence[TargetCheck]) -> list[str]:
    rows = [[c.scenario, c.requirement, c.measured, f"**{c.status}**"] for c in checks]
    return md_table(("scenario", "deltaport must reach", "measured", "status"), rows)


def summary_table(scens: Sequence[ScenarioResult]) -> list[str]:
    """Bytes as % of target, one row per scenario, one column per method (article style)."""
    header = ("scenario", "target size", *(METHOD_LABELS[m] for m in METHODS))
    rows = []
    for scen in scens:
        cells = [scen.id, fmt_bytes(scen.target_size)]
        for method in METHODS:
            m = scen.get(method)
            if m is None:
                cells.append("—")
            elif m.ok:
                exact = "" if m.exact is not False else " (NOT exact)"
                cells.append(f"{fmt_pct(m.bytes, scen.target_size)} ({fmt_bytes(m.bytes)}){exact}")
            else:
                cells.append(m.status)
        rows.append(cells)
    return md_table(header, rows)


# -- chart -------------------------------------------------------------------------------

CHART_FLOOR = 1000  # bytes: the left edge of the log scale
BAR_WIDTH = 40
BAR_PARTS = " ▏▎▍▌▋▊▉█"


@dataclass(frozen=True)
class Bar:
    scenario: str
    method: str
    bytes: int
    length: float  # in character cells, 0..BAR_WIDTH


def chart_bars(scens: Sequence[ScenarioResult], width: int = BAR_WIDTH) -> list[Bar]:
    """Bars of bytes sent on one log10 scale shared by all scenarios (1 KB at the left)."""
    entries = [(s.id, m, b) for s in scens for m in METHODS
               if (b := usable(s.get(m))) is not None]
    if not entries:
        return []
    top = math.log10(max(max(b for _, _, b in entries), CHART_FLOOR * 10))
    low = math.log10(CHART_FLOOR)
    return [Bar(sid, m, b, width * max(0.0, math.log10(max(b, 1)) - low) / (top - low))
            for sid, m, b in entries]


def bar_text(length: float) -> str:
    full = int(length)
    part = BAR_PARTS[int((length - full) * 8)]
    return ("█" * full + (part if part != " " else "")) or "▏"


def chart_lines(scens: Sequence[ScenarioResult]) -> list[str]:
    """Plain-text log-scale bar chart: bytes each method sends, per scenario."""
    sizes = {s.id: s.target_size for s in scens}
    lines = []
    for bar in chart_bars(scens):
        pct = fmt_pct(bar.bytes, sizes[bar.scenario])
        lines.append(f"{bar.scenario:<3} {bar.method:<12} {bar_text(bar.length):<{BAR_WIDTH}} "
                     f"{fmt_bytes(bar.bytes)} ({pct})")
    return lines
