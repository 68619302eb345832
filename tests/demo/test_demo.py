"""`deltaport demo` as a newcomer runs it: a subprocess, every part real, small and fast.

Small images (``--image-scale``) and a faster link keep it quick; the links still
drop connections at random. Checked: exit 0 and a verified row per device and
image in the final table; a spoilt bundle makes it fail with the reason and a
non-zero exit; Ctrl-C stops every process it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from deltaport.demo.report import NOT_VERIFIED, VERIFIED

pytestmark = pytest.mark.slow  # end to end: `-m "not slow"` leaves it out

SMALL = ["--image-scale", "0.1", "--link-rate", "8Mbit", "--timeout", "90", "--seed", "7"]


def _demo(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the demo; past TIMEOUT stop it with SIGTERM (it then stops everything it
    started: a SIGKILL would leave its registries, hub, agents and podman running)."""
    command = [sys.executable, "-m", "deltaport.cli.main", "demo", *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            pytest.fail(f"the demo took more than {timeout:.0f} s; stopped:\n{out}\n{err}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _ours(folder: Path) -> list[psutil.Process]:
    """Processes still running with FOLDER in their command line."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(folder) in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _rows(out: str) -> dict[tuple[str, str], str]:
    """(device, image) → the rest of its row in the final table."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) >= 7 and cells[0].startswith("dev-"):
            rows[(cells[0], cells[1])] = " | ".join(cells[2:])
    return rows


def test_demo_delivers_every_image_verified(tmp_path: Path) -> None:
    keep = tmp_path / "run"
    report = tmp_path / "report.json"
    done = _demo("--devices", "3", "--keep", str(keep), "--report", str(report), *SMALL,
                 timeout=420)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = _rows(done.stdout)
    expected = {(d, f"demo/app:{v}") for d in ("dev-a", "dev-b", "dev-c")
                for v in ("v1", "v2", "v3")}
    assert set(rows) == expected, done.stdout
    assert all(VERIFIED in r and NOT_VERIFIED not in r for r in rows.values()), done.stdout
    assert f"had it {VERIFIED}" in rows[("dev-b", "demo/app:v1")]  # dev-b started with v1
    assert all(f"{word}:" in done.stdout
               for word in (f"verified {VERIFIED}", "over link", "% of image"))  # the legend
    assert rows[("dev-b", "demo/app:v1")].startswith("0 B")  # so nothing was sent
    assert "complete" in done.stdout and "email to ops@example.com" in done.stdout
    # every device runs v2 in its engine; the broken v3 was rolled back, the reason shown
    doc = json.loads(report.read_text())
    assert doc["ok"] is True and len(doc["devices"]) == 3
    for device in doc["devices"]:
        [module] = [m for m in device["modules"] if m["state"] == "running"]
        assert module["name"] == "app" and module["image_id"].startswith("sha256:")
        assert device["deployment"]["state"] == "active"
        states = [d["state"] for d in device["deployments"]]
        assert states == ["active", "active", "rolled_back"], device
        assert "exited with code 3" in device["deployments"][2]["reason"] or \
            "restarting" in device["deployments"][2]["reason"], device
    assert "rolled_back" in done.stdout
    # v2 went out as a rollout: staged everywhere, the canary first, then the others
    rollout = doc["rollout"]
    assert rollout["state"] == "complete", rollout
    assert [sorted(w["devices"]) for w in rollout["waves"]] == [["dev-a"], ["dev-b", "dev-c"]]
    assert [w["active"] for w in rollout["waves"]] == [1, 2], rollout
    assert f"rollout {rollout['id']}: complete; wave 1 dev-a: 1/1 active" in done.stdout
    assert not _ours(keep), "processes left running"


def test_spoilt_bundle_fails_with_the_reason(tmp_path: Path) -> None:
    keep = tmp_path / "run"
    done = _demo("--devices", "2", "--keep", str(keep), "--fault", "corrupt-bundle", *SMALL)
    assert done.returncode == 4, done.stdout + done.stderr  # IntegrityError
    assert "not every image arrived verified" in done.stderr
    assert "dev-a: demo/app:v1 failed: SignatureError" in done.stderr.replace("\n", " ")
    assert "failed on dev-a" in done.stdout  # the requester was told by email
    assert not _ours(keep), "processes left running"


def test_ctrl_c_stops_everything_it_started(tmp_path: Path) -> None:
    keep = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deltaport.cli.main", "demo", "--devices", "2", "--keep",
         str(keep), *SMALL], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        # a shell without job control starts background jobs with SIGINT ignored, and
        # children inherit that: give the demo a terminal's default, as a user has
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not all((keep / "devices" / d / "agent.log").exists() for d in ("dev-a", "dev-b")):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        children = _ours(keep)
        assert len(children) >= 5  # cloud + 2 device registries, hub, 2 agents
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out  # "aborted"
    assert not _ours(keep), out
    assert all(not c.is_running() for c in children)
