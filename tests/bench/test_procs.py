"""Measuring a real child process: exit status, stderr tail, peak RSS, streamed stdout."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.procs import run_measured

ALLOC = ("b = bytearray(96 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); "
         "import time; time.sleep(0.6)")


def test_peak_rss_sees_a_96_mib_allocation(tmp_path: Path) -> None:
    seen: list[int] = []
    res = run_measured([sys.executable, "-c", ALLOC], workdir=tmp_path,
                       progress=lambda _t, rss: seen.append(rss))
    assert res.ok
    assert 96 * 1024 * 1024 <= res.peak_rss < 150 * 1024 * 1024
    assert res.wall_s >= 0.6
    assert seen, "progress was never called while the child ran"


def test_small_tool_is_not_charged_the_harness_memory(tmp_path: Path) -> None:
    ballast = bytearray(200 * 1024 * 1024)  # the parent's RSS must not leak into the child's
    ballast[::4096] = b"x" * len(ballast[::4096])
    res = run_measured(["true"], workdir=tmp_path)
    assert res.ok and res.peak_rss < 16 * 1024 * 1024
    del ballast


def test_failure_keeps_the_end_of_stderr(tmp_path: Path) -> None:
    code = "import sys; sys.stderr.write('x' * 5000 + ' the real reason'); sys.exit(3)"
    res = run_measured([sys.executable, "-c", code], workdir=tmp_path)
    assert res.returncode == 3 and not res.ok
    assert res.error().startswith("exit 3:") and res.error().endswith("the real reason")


def test_missing_executable_is_exit_127(tmp_path: Path) -> None:
    res = run_measured([str(tmp_path / "no-such-tool")], workdir=tmp_path)
    assert res.returncode == 127 and "no-such-tool" in res.stderr_tail


def test_stdout_streams_into_a_sink_or_is_kept(tmp_path: Path) -> None:
    chunks: list[bytes] = []
    code = "import sys; sys.stdout.buffer.write(b'a' * 3_000_000)"
    res = run_measured([sys.executable, "-c", code], workdir=tmp_path / "a",
                       stdout_sink=chunks.append)
    assert res.ok and sum(map(len, chunks)) == 3_000_000 and res.stdout == ""
    res = run_measured([sys.executable, "-c", "print('{\"k\": 1}')"], workdir=tmp_path / "b")
    assert res.stdout.strip() == '{"k": 1}'
