"""Run skopeo, the independent checker: what it reads, writes and reports."""

from __future__ import annotations

import hashlib
import json
import subprocess
from typing import Any

TLS = "--tls-verify=false"


def skopeo(*args: str) -> bytes:
    """Run skopeo ARGS; fail the test with its stderr if it fails."""
    done = subprocess.run(["skopeo", *args], capture_output=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed: {done.stderr.decode()}")
    return done.stdout


def _tls(ref: str) -> list[str]:
    return [TLS] if ref.startswith("docker://") else []


def inspect(ref: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(skopeo("inspect", *_tls(ref), ref))
    return result


def config_digest(ref: str) -> str:
    """sha256 of the raw config skopeo reads from REF (the image ID)."""
    raw = skopeo("inspect", *_tls(ref), "--config", "--raw", ref)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def diff_ids(ref: str) -> list[str]:
    raw = skopeo("inspect", *_tls(ref), "--config", "--raw", ref)
    return list(json.loads(raw)["rootfs"]["diff_ids"])


def copy(src: str, dst: str, *extra: str) -> None:
    flags = []
    if src.startswith("docker://"):
        flags.append("--src-tls-verify=false")
    if dst.startswith("docker://"):
        flags.append("--dest-tls-verify=false")
    skopeo("copy", "-q", *flags, *extra, src, dst)
