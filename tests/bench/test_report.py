"""Pure reporting: number formats, target verdicts, tables and chart on fake measurements."""

from __future__ import annotations

from bench.model import Measurement
from bench.report import ScenarioResult

from bench import report

MB = 1_000_000


def ok(method: str, n: int, **kw: object) -> Measurement:
    return Measurement(method, "ok", n, exact=True, **kw)  # type: ignore[arg-type]


def scen(sid: str, size: int = 300 * MB, **results: Measurement) -> ScenarioResult:
    return ScenarioResult(sid, "old", "new", "desc", size,
                          {k.replace("_", "-"): v for k, v in results.items()})


def test_fmt_bytes_si_three_digits() -> None:
    assert report.fmt_bytes(5_600) == "5.60 KB"
    assert report.fmt_bytes(329_379_840) == "329 MB"
    assert report.fmt_bytes(2_310_000_000) == "2.31 GB"
    assert report.fmt_bytes(999) == "999 B"
    assert report.fmt_bytes(None) == "—"


def test_fmt_pct_keeps_three_significant_digits_without_exponent() -> None:
    assert report.fmt_pct(334, 1000) == "33.4%"
    assert report.fmt_pct(5_600, 329_379_840) == "0.00170%"
    assert report.fmt_pct(1000, 1000) == "100%"
    assert report.fmt_pct(0, 1000) == "0%"
    assert report.fmt_pct(None, 1000) == "—"


def test_speed_and_memory_formats() -> None:
    assert report.fmt_mbps(100 * MB, 4.0) == "25.0 MB/s"
    assert report.fmt_mbps(100 * MB, None) == "—"
    assert report.fmt_rss(300 * report.MIB) == "300 MiB"
    assert report.fmt_seconds(75.0) == "1 min 15 s"


def test_best_tool_is_the_smaller_usable_of_zstd_and_xdelta3() -> None:
    s = scen("S1", zstd=ok("zstd", 900), xdelta3=ok("xdelta3", 700))
    assert report.best_tool(s) == ("xdelta3", 700)
    wrong = Measurement("xdelta3", "ok", 10, exact=False)  # did not reproduce NEW: ignored
    assert report.best_tool(scen("S1", zstd=ok("zstd", 900), xdelta3=wrong)) == ("zstd", 900)
    assert report.best_tool(scen("S1", zstd=Measurement("zstd", "fails"))) is None


def test_s1_ratio_met_and_not_met() -> None:
    met = report.scenario_checks(scen("S1", deltaport=ok("deltaport", 88), zstd=ok("zstd", 100),
                                      xdelta3=ok("xdelta3", 120)))
    assert [c.status for c in met] == ["met"]
    assert "0.880×" in met[0].measured
    missed = report.scenario_checks(scen("S1", deltaport=ok("deltaport", 89),
                                         zstd=ok("zstd", 100)))
    assert [c.status for c in missed] == ["NOT met"]


def test_s2_needs_both_half_best_tool_and_bsdiff() -> None:
    s = scen("S2", deltaport=ok("deltaport", 40), zstd=ok("zstd", 100),
             xdelta3=ok("xdelta3", 90), bsdiff=ok("bsdiff", 30))
    checks = report.scenario_checks(s)
    assert [(c.requirement, c.status) for c in checks] == [
        ("≤ 0.5 × best tool", "met"), ("≤ 0.9 × bsdiff", "NOT met")]


def test_s0_compares_with_plain_zstd() -> None:
    checks = report.scenario_checks(scen("S0", deltaport=ok("deltaport", 96),
                                         zstd=ok("zstd", 100)))
    assert [c.status for c in checks] == ["NOT met"]


def test_failed_or_inexact_deltaport_is_not_measured() -> None:
    err = Measurement("deltaport", "error", note="create exit 1: boom")
    checks = report.scenario_checks(scen("S3", deltaport=err, zstd=ok("zstd", 100)))
    assert [c.status for c in checks] == ["not measured"]
    inexact = Measurement("deltaport", "ok", 1, exact=False)
    checks = report.scenario_checks(scen("S3", deltaport=inexact, zstd=ok("zstd", 100)))
    assert checks[0].status == "not measured"


def test_l2_ratio_against_xdelta3_and_apply_rss() -> None:
    dp = ok("deltaport", 20, apply_rss=300 * report.MIB)
    checks = report.scenario_checks(scen("L2", deltaport=dp, xdelta3=ok("xdelta3", 100),
                                         zstd=Measurement("zstd", "fails")))
    assert [c.status for c in checks] == ["met", "NOT met"]
    assert checks[1].measured == "300 MiB"


def test_speed_check_uses_the_slowest_scenario() -> None:
    fast = scen("S1", 100 * MB, deltaport=ok("deltaport", 1, build_s=2.0, apply_s=1.0))
    slow = scen("S2", 100 * MB, deltaport=ok("deltaport", 1, build_s=20.0, apply_s=1.0))
    build = report.speed_check([fast, slow], "build", 10.0)
    assert build.status == "NOT met" and "slowest S2 5.0 MB/s" in build.measured
    apply = report.speed_check([fast, slow], "apply", 50.0)
    assert apply.status == "met"
    none = report.speed_check([scen("S1")], "build", 10.0)
    assert none.status == "not measured"


def test_markdown_tables_escape_pipes_and_show_failures() -> None:
    s = scen("S2", 1000, deltaport=Measurement("deltaport", "error", note="exit 2: a|b"),
             zstd=ok("zstd", 10, build_s=1.0, apply_s=0.5), gzip_layers=ok("gzip-layers", 400))
    text = "\n".join(report.scenario_section(s))
    assert "error: exit 2: a\\|b" in text
    assert "| zstd -19 --long=31 --patch-from | 10 B | 1.00% |" in text
    summary = "\n".join(report.summary_table([s]))
    assert "| S2 | 1.00 KB | error | 1.00% (10 B) |" in summary
    targets = "\n".join(report.targets_section(report.all_checks([s])))
    assert "**not measured**" in targets


def test_chart_is_log_scale_and_ordered_by_size() -> None:
    s = scen("S2", 10 * MB, deltaport=ok("deltaport", 10_000), zstd=ok("zstd", 1_000_000),
             gzip_layers=ok("gzip-layers", 10 * MB))
    bars = {b.method: b.length for b in report.chart_bars([s], width=40)}
    assert bars["deltaport"] < bars["zstd"] < bars["gzip-layers"] == 40
    # one decade per 10 cells: 10 KB is 1 decade above the 1 KB floor, 10 MB is 4
    assert abs(bars["deltaport"] - 10) < 1e-9
    lines = report.chart_lines([s])
    assert lines[0].startswith("S2  deltaport") and "10.0 KB (0.100%)" in lines[0]


def test_plan_section_reports_met_and_not_met() -> None:
    from bench.run import plan_section

    doc = {
        "sqlite": {"devices": 100000, "bundles": 5, "planning_s": 3.0, "record_s": 20.0,
                   "ingest_per_s": 12000.0},
        "postgresql": {"devices": 100000, "bundles": 5, "planning_s": 31.0, "record_s": 50.0,
                       "ingest_per_s": 1500.0},
    }
    lines = plan_section(doc)
    sqlite = next(line for line in lines if line.startswith("| sqlite"))
    pg = next(line for line in lines if line.startswith("| postgresql"))
    assert sqlite.count("| met") == 2
    assert pg.count("NOT met") == 2
