"""The demo's final table: one line per row at 120 columns, and a legend that says
what its columns mean (issue 13)."""

from __future__ import annotations

from rich.console import Console

from deltaport.demo.report import LEGEND, Delivery, failure_lines, results_table

REASON = "failed: SignatureError: the bundle's signature verifies against no trusted key"
DELIVERIES = [
    Delivery("dev-a", "demo/app:v1", 2_874_689, 3_100_000, 55_000_000, 20_000_000, 94.3,
             "present", verified=True),
    Delivery("dev-b", "demo/app:v1", 0, 53_100, 55_000_000, 0, 4.3, "had it", verified=True),
    Delivery("dev-c", "demo/app:v2", 12_874, 53_100, 55_000_000, 2_000_000, 4.3, REASON),
    Delivery("dev-c", "demo/app:v3", 12_874, 53_100, 55_000_000, 2_000_000, 604.3,
             "did not arrive"),
]


def _render(width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(results_table(DELIVERIES, 1_000_000))
    return console.export_text().splitlines()


def test_every_row_is_one_line_at_120_columns() -> None:
    lines = _render(120)
    rows = [line for line in lines if line.strip().startswith("dev-")]
    assert len(rows) == len(DELIVERIES), "\n".join(lines)  # no status wrapped onto a 2nd line
    assert all(len(line) <= 120 for line in lines)
    assert "…" not in "\n".join(lines)  # and nothing cut short either
    assert "present \u2713" in rows[0] and "had it \u2713" in rows[1]
    assert "failed \u2717" in rows[2] and "did not arrive \u2717" in rows[3]


def test_a_failure_reason_is_shown_whole_below_the_table() -> None:
    assert failure_lines(DELIVERIES) == [f"dev-c demo/app:v2: {REASON}"]


def test_the_legend_says_what_the_numbers_mean() -> None:
    text = " ".join(LEGEND)
    for term in ("verified", "over link", "% of image", "layer pull"):
        assert f"{term}" in text
    assert "more than the bundle" in text  # why over link exceeds bundle
    assert "whole image" in text  # what % of image is measured against
