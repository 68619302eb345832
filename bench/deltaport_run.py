"""Measure deltaport itself through its real CLI, as a user would run it.

``delta create`` and ``delta apply`` run as child processes (time and peak RSS of each);
the bundle's size on disk is the number that counts; the rebuilt image is then checked
byte-exact by ``bench.verify`` (independent of deltaport's code) and deleted. A command
that fails becomes an "error" measurement with the end of its stderr, so the harness
runs, and reports, before deltaport is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.baselines import Watch
from bench.corpus import ImageInfo
from bench.model import Measurement
from bench.procs import run_measured
from bench.verify import verify_image

ApplyDest = Literal["docker-archive", "oci"]
WIDE_COLUMNS = "100000"  # keeps rich from wrapping the --json summary on a pipe
REBUILT_TAG = "rebuilt"


@dataclass(frozen=True)
class DeltaportCli:
    """How to call deltaport: the executable and where apply writes the rebuilt image."""

    exe: Path
    apply_dest: ApplyDest = "docker-archive"


def create_argv(cli: DeltaportCli, new: Path, old: Path | None, bundle: Path) -> list[str]:
    argv = [str(cli.exe), "delta", "create", "--to", f"docker-archive:{new}"]
    if old is not None:
        argv += ["--from", f"docker-archive:{old}"]
    return [*argv, "-o", str(bundle), "--json"]


def apply_argv(cli: DeltaportCli, bundle: Path, old: Path | None, dest: str) -> list[str]:
    argv = [str(cli.exe), "delta", "apply", str(bundle)]
    if old is not None:
        argv += ["--from", f"docker-archive:{old}"]
    return [*argv, "--to", dest]


def apply_dest(cli: DeltaportCli, workdir: Path) -> tuple[str, Path]:
    """The --to reference for apply, and the path to delete before and after."""
    if cli.apply_dest == "oci":
        layout = workdir / "rebuilt-oci"
        return f"oci:{layout}:{REBUILT_TAG}", layout
    archive = workdir / "rebuilt.docker.tar"
    return f"docker-archive:{archive}", archive


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _parse_summary(stdout: str) -> dict[str, Any]:
    """The create --json summary, or a note that it could not be parsed."""
    try:
        doc = json.loads(stdout)
    except ValueError:
        return {"summary_unparsed": stdout[-500:]}
    return {"summary": doc} if isinstance(doc, dict) else {"summary_unparsed": stdout[-500:]}


def run_deltaport(
    cli: DeltaportCli,
    new: ImageInfo,
    old: ImageInfo | None,
    workdir: Path,
    watch: Watch,
    label: str,
) -> Measurement:
    """Create a bundle old→new, apply it, verify the rebuilt image; keep the bundle."""
    workdir.mkdir(parents=True, exist_ok=True)
    bundle = workdir / "deltaport.bundle"
    bundle.unlink(missing_ok=True)
    env = {**os.environ, "COLUMNS": WIDE_COLUMNS, "NO_COLOR": "1"}
    old_path = old.archive if old else None
    made = run_measured(create_argv(cli, new.archive, old_path, bundle), workdir=workdir / "create",
                        progress=watch(f"{label} deltaport create"), env=env)
    if not made.ok:
        return Measurement("deltaport", "error", note=f"create {made.error()}")
    if not bundle.is_file():
        return Measurement("deltaport", "error", note="create exited 0 but wrote no bundle")
    size = bundle.stat().st_size
    extra = _parse_summary(made.stdout)
    dest, dest_path = apply_dest(cli, workdir)
    _remove(dest_path)
    try:
        applied = run_measured(apply_argv(cli, bundle, old_path, dest), workdir=workdir / "apply",
                               progress=watch(f"{label} deltaport apply"), env=env)
        if not applied.ok:
            return Measurement("deltaport", "error", size, made.wall_s, made.peak_rss,
                               note=f"apply {applied.error()}", extra=extra)
        verdict = verify_image(dest, new.config_digest, new.diff_ids)
        skopeo = skopeo_check(dest, new.diff_ids, workdir / "skopeo")
    finally:
        _remove(dest_path)
    problems = [p for p in (None if verdict.exact else verdict.summary(), skopeo) if p]
    extra["skopeo_check"] = skopeo or "ok"
    return Measurement("deltaport", "ok", size, made.wall_s, made.peak_rss, applied.wall_s,
                       applied.peak_rss, not problems, note="; ".join(problems), extra=extra)


def skopeo_check(dest: str, want_diff_ids: tuple[str, ...], workdir: Path) -> str | None:
    """A second opinion from skopeo: it reads the rebuilt image and lists the same diff_ids.

    Returns None when skopeo agrees, else the reason (skopeo missing counts as agreeing,
    with the note left in ``extra``, since the hash check above already ran).
    """
    if shutil.which("skopeo") is None:
        return None
    res = run_measured(["skopeo", "--insecure-policy", "inspect", "--config", dest],
                       workdir=workdir)
    if not res.ok:
        return f"skopeo cannot read the rebuilt image: {res.error()}"
    try:
        diff_ids = json.loads(res.stdout)["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        return "skopeo printed no config with rootfs.diff_ids"
    return None if tuple(diff_ids) == want_diff_ids else "skopeo lists other diff_ids"
