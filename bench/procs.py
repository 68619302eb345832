"""Run one measured child process: wall time, peak memory, exit status, output tail.

Peak RSS comes from two sources and the larger wins: the kernel's own high-water mark
(``ru_maxrss``) and a psutil poll of the whole process tree's summed RSS (which also
catches children that run side by side). The high-water mark is read through GNU
``/usr/bin/time -f %M``, not from our own ``wait4``: Python starts children with vfork,
and Linux then carries the *parent's* peak RSS into the child's ``ru_maxrss`` at exec —
every tool would seem to use at least as much memory as the harness. Without GNU time
the harness falls back to ``wait4`` (an over-estimate by the harness's own RSS).

Output goes to files, never to pipes we could forget to drain,
except when the caller asks to stream stdout into a hash (``stdout_sink``).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]

POLL_INTERVAL_S = 0.25
STDERR_TAIL_BYTES = 2000  # how much of a failing command's stderr a report carries
STDOUT_KEEP_BYTES = 4 << 20  # a tool's stdout we keep (JSON summaries); more is cut
STREAM_CHUNK = 1 << 20
GNU_TIME = Path("/usr/bin/time")

Progress = Callable[[float, int], None]
"""Called while a child runs with (elapsed seconds, current tree RSS in bytes)."""


@dataclass(frozen=True)
class ProcResult:
    """What one child process did."""

    argv: tuple[str, ...]
    returncode: int
    wall_s: float
    peak_rss: int  # bytes
    stdout: str
    stderr_tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def error(self) -> str:
        """A one-line reason for a failure: exit status and the end of stderr."""
        tail = " ".join(self.stderr_tail.split())[-400:]
        return f"exit {self.returncode}: {tail}" if tail else f"exit {self.returncode}"


def _tree_rss(proc: psutil.Process, skip_root: bool) -> int:
    """Summed RSS of a process's live descendants, and of itself unless ``skip_root``."""
    try:
        procs = proc.children(recursive=True)
    except psutil.Error:
        return 0
    if not skip_root:
        procs.append(proc)
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def _read_time_kb(path: Path) -> int:
    """GNU time's %M (peak RSS, KiB): the last line of its -o file; 0 if absent."""
    try:
        lines = path.read_text().split()
    except OSError:
        return 0
    return int(lines[-1]) if lines and lines[-1].isdigit() else 0


def _read_tail(path: Path, limit: int) -> str:
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, size - limit))
        return f.read(limit).decode("utf-8", "replace")


def _drain(stream: object, sink: Callable[[bytes], None]) -> None:
    read = stream.read  # type: ignore[attr-defined]
    while chunk := read(STREAM_CHUNK):
        sink(chunk)


def run_measured(
    argv: Sequence[str],
    *,
    workdir: Path,
    progress: Progress | None = None,
    stdout_sink: Callable[[bytes], None] | None = None,
    env: dict[str, str] | None = None,
) -> ProcResult:
    """Run ``argv`` to completion and measure it; never raises for a failing command.

    ``stdout_sink`` receives the child's stdout in chunks (e.g. to hash a decoded file
    without writing it); otherwise stdout is kept, up to ``STDOUT_KEEP_BYTES``.
    A command that cannot start at all is reported as exit 127 with the reason.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"
    time_path = workdir / "maxrss-kb.txt"
    time_path.unlink(missing_ok=True)
    wrapped = GNU_TIME.is_file()
    full = [str(GNU_TIME), "-f", "%M", "-o", str(time_path), *argv] if wrapped else list(argv)
    start = time.monotonic()
    with out_path.open("wb") as out_f, err_path.open("wb") as err_f:
        try:
            child = subprocess.Popen(
                full,
                stdout=subprocess.PIPE if stdout_sink else out_f,
                stderr=err_f,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            return ProcResult(tuple(argv), 127, 0.0, 0, "", f"cannot start: {exc}")
        drainer = None
        if stdout_sink is not None:
            drainer = threading.Thread(target=_drain, args=(child.stdout, stdout_sink))
            drainer.start()
        status, polled, own_maxrss = _wait(child, start, progress, skip_root=wrapped)
        if drainer is not None:
            drainer.join()
            assert child.stdout is not None
            child.stdout.close()
    wall = time.monotonic() - start
    kernel_peak = _read_time_kb(time_path) * 1024 if wrapped else own_maxrss
    peak = max(polled, kernel_peak)
    stdout = "" if stdout_sink else _read_tail(out_path, STDOUT_KEEP_BYTES)
    stderr = _read_tail(err_path, STDERR_TAIL_BYTES)
    return ProcResult(tuple(argv), status, wall, peak, stdout, stderr)


def _wait(
    child: subprocess.Popen[bytes], start: float, progress: Progress | None, skip_root: bool
) -> tuple[int, int, int]:
    """Poll the child until it exits: (exit status, polled peak RSS, wait4 ru_maxrss)."""
    try:
        watched: psutil.Process | None = psutil.Process(child.pid)
    except psutil.Error:
        watched = None
    peak = 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid == child.pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode, peak, usage.ru_maxrss * 1024
        rss = _tree_rss(watched, skip_root) if watched is not None else 0
        peak = max(peak, rss)
        if progress is not None:
            progress(time.monotonic() - start, rss)
        time.sleep(POLL_INTERVAL_S)
