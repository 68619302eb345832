"""A ready-made ``runtime.registry_gc_command``: stop the registry, collect, start it again.

Docker Distribution frees blobs only in ``docker-registry garbage-collect``, which must
not run while the registry serves (a push in between would lose blobs). This stops it,
collects, and starts it again — also when the collect failed — for a registry run

- as a systemd unit (the Debian ``docker-registry`` package's)::

    python -m deltaport.agent.runtime.registrygc \\
        --config /etc/docker/registry/config.yml --systemd-unit docker-registry

- or as a plain process with a PID file (restarted as ``docker-registry serve CONFIG``
  in a session of its own, its new PID written to the file)::

    python -m deltaport.agent.runtime.registrygc \\
        --config /srv/registry/config.yml --pid-file /run/deltaport-registry.pid \\
        --log /var/log/deltaport-registry.log

Exit status 0 when collected and started again, 1 when a step failed, 2 when the PID
file names a process that is not this registry (then nothing is stopped). The agent
waits for ``/v2/`` to answer afterwards (``gc.wait_until_ready``).

``--delete-untagged`` is passed unless ``--keep-untagged``: deltaport writes plain
image manifests and addresses images by tag, so untagged manifests (a tag re-pushed
to another image) are garbage. Registry 2.8 also deletes the per-platform manifests
of a multi-platform index (distribution/distribution#3004): on a device whose
registry holds such indexes, pass ``--keep-untagged``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

STEP_TIMEOUT = 600.0  # seconds for garbage-collect, and for systemctl stop/start
STOP_TIMEOUT = 30.0  # seconds the registry gets to exit after SIGTERM, before SIGKILL
POLL = 0.05  # seconds between checks that it exited


class GcStepError(Exception):
    """One step failed; the message says which and why."""


def registrygc_command(*args: str) -> tuple[str, ...]:
    """The argv running this module with the current interpreter and ARGS."""
    return (sys.executable, "-m", "deltaport.agent.runtime.registrygc", *args)


def _run(argv: Sequence[str], timeout: float) -> None:
    try:
        done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GcStepError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace").strip()[-2000:]
        raise GcStepError(f"{' '.join(argv)} exited with {done.returncode}: {output}")


def process_state(pid: int) -> str | None:
    """The /proc state letter of PID ("R", "S", "Z", …), None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def running(pid: int) -> bool:
    """Whether PID is a live process (a zombie has exited: it waits only to be reaped)."""
    return process_state(pid) not in (None, "Z", "X")


def is_registry(pid: int, config: Path) -> bool:
    """Whether PID runs ``… serve CONFIG`` (so a stale PID file cannot kill another process)."""
    try:
        argv = [os.fsdecode(a) for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except (FileNotFoundError, ProcessLookupError):
        return False
    want = config.resolve()
    return "serve" in argv and any(arg and (cwd / arg).resolve() == want for arg in argv)


def stop_pid(pid: int, timeout: float) -> None:
    """SIGTERM, wait up to TIMEOUT for it to exit, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not running(pid):
                return
            time.sleep(POLL)
    raise GcStepError(f"registry PID {pid} did not exit after SIGKILL")


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    if not text.isdigit():
        raise GcStepError(f"{pid_file} does not hold a PID: {text[:40]!r}")
    return int(text)


def start_serving(registry_bin: str, config: Path, pid_file: Path, log: Path | None) -> int:
    """``REGISTRY_BIN serve CONFIG`` in a new session; writes its PID to PID_FILE."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen([registry_bin, "serve", str(config)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        raise GcStepError(f"cannot start {registry_bin} serve {config}: {exc}") from exc
    finally:
        if not isinstance(out, int):
            out.close()
    temp = pid_file.with_name(pid_file.name + ".tmp")
    temp.write_text(f"{proc.pid}\n")
    os.replace(temp, pid_file)
    return proc.pid


def collect(args: argparse.Namespace) -> None:
    """Stop, collect, start (the start also when the collect failed)."""
    collect_argv = [args.registry_bin, "garbage-collect", str(args.config)]
    if not args.keep_untagged:
        collect_argv.insert(2, "--delete-untagged")
    if args.systemd_unit:
        _run(["systemctl", "stop", args.systemd_unit], STEP_TIMEOUT)
        try:
            _run(collect_argv, STEP_TIMEOUT)
        finally:
            _run(["systemctl", "start", args.systemd_unit], STEP_TIMEOUT)
        return
    pid = read_pid(args.pid_file)
    if pid is not None and running(pid):
        stop_pid(pid, args.stop_timeout)
    try:
        _run(collect_argv, STEP_TIMEOUT)
    finally:
        start_serving(args.registry_bin, args.config, args.pid_file, args.log)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deltaport.agent.runtime.registrygc",
        description="Stop the local registry, run its garbage-collect, start it again.")
    parser.add_argument("--config", type=Path, required=True, help="the registry's config.yml")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--systemd-unit", help="the registry's systemd unit (docker-registry)")
    how.add_argument("--pid-file", type=Path, help="the PID file of a `serve` process")
    parser.add_argument("--registry-bin", default=shutil.which("docker-registry")
                        or "docker-registry", help="the docker-registry executable")
    parser.add_argument("--log", type=Path, help="append a restarted registry's output here")
    parser.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT,
                        help="seconds after SIGTERM before SIGKILL")
    parser.add_argument("--keep-untagged", action="store_true",
                        help="do not pass --delete-untagged (registries holding indexes)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        pid = None if args.pid_file is None else read_pid(args.pid_file)
        if pid is not None and running(pid) and not is_registry(pid, args.config):
            print(f"registrygc: PID {pid} in {args.pid_file} is not `serve {args.config}`; "
                  "nothing stopped", file=sys.stderr)
            return 2
        collect(args)
    except GcStepError as exc:
        print(f"registrygc: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
