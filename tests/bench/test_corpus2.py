"""Corpus 2 builder, pure parts: pinned edits apply to the real sources, output is deterministic."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

BUILD = Path(__file__).resolve().parents[2] / "bench" / "corpus2" / "build.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("corpus2_build", BUILD)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


c2 = _load()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_app_edits_and_bump_apply_to_the_real_sources() -> None:
    a1 = c2.read_app("svcA")
    a2 = c2.apply_edits(a1, c2.SVC_A_V2_EDITS)
    changed = sorted(k for k in a1 if a1[k] != a2[k])
    assert len(changed) == 4
    req = c2.bump_requirement(a2["requirements.txt"], *c2.SVC_A_V2_BUMP)
    assert "werkzeug==3.0.4" in req.splitlines() and "werkzeug==3.0.3" not in req
    probe = {c2.PROBE: c2.read_app("svcB")[c2.PROBE]}
    assert c2.apply_edits(probe, c2.PROBE_V2_EDITS)[c2.PROBE] != probe[c2.PROBE]


def test_edit_must_match_exactly_once() -> None:
    with pytest.raises(c2.InputError):
        c2.apply_edits({"a.py": "x\nx\n"}, [("a.py", "x\n", "y\n")])
    with pytest.raises(c2.InputError):
        c2.apply_edits({"a.py": "x\n"}, [("b.py", "x\n", "y\n")])


def test_every_requirement_has_a_pinned_wheel() -> None:
    for app in ("svcA", "svcB"):
        req = c2.read_app(app)["requirements.txt"]
        wheels = c2.wheels_for(req)
        assert len(wheels) == len([ln for ln in req.splitlines() if ln.strip()])
        assert all(len(w.sha256) == 64 for w in wheels)
    with pytest.raises(c2.InputError):
        c2.wheels_for("left-pad==1.0\n")


def test_ca_bundle_is_independent_of_directory_order() -> None:
    certs = {"b.crt": b"B", "a.crt": b"A\n"}
    assert c2.ca_bundle(certs) == c2.ca_bundle(dict(reversed(certs.items()))) == b"A\nB\n"


def test_source_stager_gives_identical_bytes_twice(tmp_path: Path) -> None:
    files = {"app/x.py": "print(1)\n", "requirements.txt": "flask==3.0.3\n"}
    compile_probe = shutil.which("gcc") is not None
    if compile_probe:
        files[c2.PROBE] = c2.read_app("svcB")[c2.PROBE]
    trees = []
    for run in ("one", "two"):
        (tmp_path / run).mkdir()
        c2.source_stager(files, compile_probe)(str(tmp_path / run))
        trees.append(_tree(tmp_path / run))
    assert trees[0] == trees[1]
    assert ("bin/healthprobe" in trees[0]) == compile_probe
