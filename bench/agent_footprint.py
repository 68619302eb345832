"""What a device pays for the agent: installed size, idle RSS, idle CPU per hour.

``python bench/agent_footprint.py [--seconds 30] [--poll-interval 5]`` builds a wheel of
this checkout, installs it twice into fresh virtualenvs (``deltaport[agent]``, what a
device installs, and ``deltaport[all]``, what a hub installs), then runs
``deltaport agent run`` from the agent venv against a real (empty) device registry
with an empty inbox and samples the process with psutil. Prints a Markdown table for
bench/RESULTS.md ("Agent footprint").

The helpers (:func:`build_wheel`, :func:`make_venv`) are shared with
tests/agent/test_device_install.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT = 600  # seconds for pip to build or install (a slow index)
WARM_UP = 3.0  # seconds after start before idle sampling begins (imports, first pass)
# Hub-side modules a device install must not have (the [hub] extra and what it pulls in).
HUB_ONLY_MODULES = ("fastapi", "starlette", "pydantic", "sqlalchemy", "uvicorn", "alembic",
                    "psycopg", "aiosmtpd")


@dataclass(frozen=True)
class Venv:
    """A virtualenv with deltaport installed."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def deltaport(self) -> Path:
        return self.root / "bin" / "deltaport"

    def site_packages(self) -> Path:
        (path,) = (self.root / "lib").glob("python3*/site-packages")
        return path


@dataclass(frozen=True)
class Idle:
    """An idle agent, sampled over a window."""

    seconds: float  # length of the window
    rss_bytes: int  # largest RSS seen in the window
    cpu_seconds: float  # user + system CPU used in the window

    @property
    def cpu_seconds_per_hour(self) -> float:
        return self.cpu_seconds / self.seconds * 3600


def build_wheel(out: Path) -> Path:
    """A wheel of this checkout in OUT (pip wheel, isolated build, no dependencies)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                    "--no-deps", "-w", str(out), str(REPO)],
                   check=True, timeout=INSTALL_TIMEOUT, capture_output=True)
    (wheel,) = out.glob("deltaport-*.whl")
    return wheel


def make_venv(root: Path, wheel: Path, extra: str) -> Venv:
    """A fresh venv at ROOT with ``deltaport[EXTRA]`` installed from WHEEL (binary wheels)."""
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    venv = Venv(root)
    subprocess.run([str(venv.python), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", "--only-binary", ":all:",
                    f"deltaport[{extra}] @ {wheel.as_uri()}"],
                   check=True, timeout=INSTALL_TIMEOUT, capture_output=True)
    return venv


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under PATH (what du counts, without block rounding)."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


VENV_OWN = ("pip", "setuptools", "_distutils_hack")  # what `python -m venv` puts in itself


def installed_bytes(venv: Venv) -> int:
    """Bytes of site-packages without the venv's own pip and setuptools."""
    site = venv.site_packages()
    own = sum(tree_bytes(p) for p in site.iterdir()
              if p.is_dir() and p.name.split("-")[0] in VENV_OWN)
    return tree_bytes(site) - own


def importable(venv: Venv, modules: tuple[str, ...]) -> list[str]:
    """Which of MODULES the venv's Python can find."""
    probe = ("import importlib.util, sys\n"
             "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))")
    done = subprocess.run([str(venv.python), "-c", probe, *modules], check=True,
                          capture_output=True, text=True, timeout=60)
    return done.stdout.split()


def measure_idle(venv: Venv, config: Path, seconds: float) -> Idle:
    """Run ``deltaport agent run -c CONFIG`` from VENV, sample it for SECONDS after
    WARM_UP, stop it with SIGTERM."""
    proc = subprocess.Popen([str(venv.deltaport), "agent", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ps = psutil.Process(proc.pid)
        time.sleep(WARM_UP)
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited early with {proc.returncode}")
        start = ps.cpu_times()
        began = time.monotonic()
        rss = ps.memory_info().rss
        while time.monotonic() - began < seconds:
            time.sleep(0.5)
            rss = max(rss, ps.memory_info().rss)
        end = ps.cpu_times()
        elapsed = time.monotonic() - began
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    cpu = (end.user - start.user) + (end.system - start.system)
    return Idle(elapsed, rss, cpu)


def write_agent_config(root: Path, registry_host: str, trusted_key: Path,
                       poll_interval: float) -> Path:
    """An inbox-only agent.toml under ROOT for the device registry REGISTRY_HOST."""
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    path = root / "agent.toml"
    path.write_text(f'device = "dev-1"\ntrusted_keys = ["{trusted_key}"]\n'
                    f'inbox = "{root / "inbox"}"\nstate_dir = "{root / "state"}"\n'
                    f'registry = "docker://{registry_host}"\n'
                    f"poll_interval = {poll_interval}\n")
    return path


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="idle window")
    parser.add_argument("--poll-interval", type=float, default=5.0,
                        help="the agent's poll_interval (its default is 30 s)")
    args = parser.parse_args(argv)

    from deltaport.bundle import generate_keypair
    from deltaport.demo.services import run_registry

    with tempfile.TemporaryDirectory(prefix="agent-footprint-") as tmp:
        root = Path(tmp)
        wheel = build_wheel(root / "wheel")
        agent = make_venv(root / "venv-agent", wheel, "agent")
        full = make_venv(root / "venv-all", wheel, "all")
        leaked = importable(agent, HUB_ONLY_MODULES)
        if leaked:
            print(f"the agent venv has hub modules: {leaked}", file=sys.stderr)
            return 1
        keys = generate_keypair(root / "keys")
        with run_registry(root / "registry") as registry:
            config = write_agent_config(root / "device", registry.host,
                                        keys.public_key_path, args.poll_interval)
            idle = measure_idle(agent, config, args.seconds)
        agent_size, full_size = installed_bytes(agent), installed_bytes(full)
        print("| install | site-packages (without pip, setuptools) | of the full install |"
              " with pip, setuptools |")
        print("|---|---|---|---|")
        print(f"| `deltaport[agent]` (device) | {_mb(agent_size)} | "
              f"{agent_size / full_size:.0%} | {_mb(tree_bytes(agent.site_packages()))} |")
        print(f"| `deltaport[all]` (hub) | {_mb(full_size)} | 100% | "
              f"{_mb(tree_bytes(full.site_packages()))} |")
        print()
        print(f"idle `deltaport agent run` (empty inbox, poll_interval {args.poll_interval:g} s, "
              f"{idle.seconds:.0f} s window): RSS {idle.rss_bytes / 2**20:.1f} MiB, "
              f"CPU {idle.cpu_seconds:.2f} s -> {idle.cpu_seconds_per_hour:.1f} CPU s/hour "
              f"({idle.cpu_seconds_per_hour / 36:.3f}% of one core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
