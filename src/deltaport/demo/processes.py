"""Child processes the demo (and the end-to-end tests) start: the hub and the agents.

Each child is the real command (``deltaport hub serve``, ``deltaport agent run``) in
its own session, so a Ctrl-C on the terminal reaches the demo only and the demo stops
its children itself, in order, by PID: SIGTERM, a bounded wait, then SIGKILL. Output
goes to a log file per child, named in every error so a failure can be looked into.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from deltaport.errors import StorageError

STOP_TIMEOUT = 10.0  # seconds a child gets to exit after SIGTERM before SIGKILL
LOG_TAIL_BYTES = 2000  # bytes of a child's log quoted in an error


def stop_process(
    proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM
) -> int | None:
    """SIG (SIGTERM), wait up to TIMEOUT, then SIGKILL; returns the exit status.

    A process that already exited is left alone.
    """
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    return proc.returncode


def deltaport_command(*args: str) -> list[str]:
    """The argv running ``deltaport ARGS`` with this interpreter (works without a venv on PATH)."""
    return [sys.executable, "-m", "deltaport.cli.main", *args]


def hub_command(data_dir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """``deltaport hub serve`` on the embedded default in DATA_DIR."""
    return deltaport_command(
        "hub", "serve", "--data-dir", str(data_dir), "--host", host, "--port", str(port),
        "--log-level", "warning",
    )


def agent_command(config: Path) -> list[str]:
    """``deltaport agent run --config CONFIG``."""
    return deltaport_command("agent", "run", "--config", str(config))


def log_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """The last LIMIT bytes of a log file, as text ('' when there is none)."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


@dataclass
class Child:
    """One running child process, its name and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        """True while the process has not exited."""
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait up to TIMEOUT, then SIGKILL; returns the exit status."""
        return stop_process(self.proc, timeout)

    def kill(self) -> None:
        """SIGKILL now (a crash, for fault tests)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)

    def wait_http(self, url: str, timeout: float = 30.0, *, ca_file: Path | None = None) -> None:
        """Poll URL until it answers 2xx (an https URL verified against CA_FILE).

        Raises:
            StorageError: the process exited, or URL did not answer within TIMEOUT.
        """
        deadline = time.monotonic() + timeout
        verify = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        while True:
            if self.proc.poll() is not None:
                raise StorageError(
                    f"{self.name} exited with status {self.proc.returncode}; "
                    f"log {self.log}:\n{log_tail(self.log)}"
                )
            try:
                if httpx.get(url, timeout=1.0, verify=verify).is_success:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise StorageError(f"{self.name} did not answer {url} within {timeout:.0f} s; "
                                   f"log {self.log}")
            time.sleep(0.05)


@dataclass
class ProcessGroup:
    """The children one run started; leaving the block stops them all, newest first."""

    env: Mapping[str, str] | None = None
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], log: Path, *,
              prefix: Sequence[str] = ()) -> Child:
        """Start ARGV (after PREFIX, e.g. ``ip netns exec NS``) with output to LOG.

        Raises:
            StorageError: the program cannot be started.
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(self.env or {})}
        try:
            with log.open("ab") as out:
                proc = subprocess.Popen([*prefix, *argv], stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env,
                                        start_new_session=True)
        except OSError as exc:
            raise StorageError(f"cannot start {name}: {exc}") from exc
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        """Stop every child still running, newest first (agents before the hub)."""
        for child in reversed(self.children):
            child.stop()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
