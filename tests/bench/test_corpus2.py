"""Corpus 2 builder, pure parts: pinned edits apply to the real sources, output is deterministic."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

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


# -- the arm64 variant (bench/corpus2/arm64.py) -------------------------------------------
arm = sys.modules["arm64"]


def _all_debs() -> list[Any]:
    return [*c2.BASE_V1, *c2.BASE_V2, *c2.python_debs(c2.PY_V1), *c2.python_debs(c2.PY_V2)]


def test_every_deb_of_the_corpus_has_an_arm64_pin_of_the_same_version() -> None:
    for deb in _all_debs():
        path, sha = arm.DEBS[deb.pin]
        version = deb.version.split(":", 1)[-1]
        name = Path(path).name
        assert name in (f"{deb.name}_{version}_arm64.deb", f"{deb.name}_{version}_all.deb")
        assert len(sha) == 64 and int(sha, 16) >= 0
    assert arm.url_of("pool/updates/main/p/x.deb").startswith(arm.SECURITY + "/pool/updates/")
    assert arm.url_of("pool/main/p/x.deb") == arm.DEBIAN + "/pool/main/p/x.deb"


def test_arm64_requirements_take_aarch64_wheels_and_the_shared_pure_ones() -> None:
    for app in ("svcA", "svcB"):
        req = c2.read_app(app)["requirements.txt"]
        amd, aarch = c2.wheels_for(req), c2.wheels_for(req, c2.ARCHES["arm64"].wheels)
        assert [w.requirement for w in amd] == [w.requirement for w in aarch]
        for x86, arm_w in zip(amd, aarch, strict=True):
            if x86.file.endswith("-none-any.whl"):
                assert arm_w == x86
            else:
                assert "aarch64" in arm_w.file and "x86_64" not in arm_w.file
                assert arm_w.sha256 != x86.sha256


def test_arm64_fetch_checks_the_pinned_sha256(tmp_path: Path) -> None:
    pin = "netbase=6.4"
    (tmp_path / Path(arm.DEBS[pin][0]).name).write_bytes(b"not the package")
    with pytest.raises(arm.FetchError, match="sha256"):
        arm.fetch_debs([pin], tmp_path)
    with pytest.raises(arm.FetchError, match="no arm64 pin"):
        arm.fetch_debs(["netbase=0.1"], tmp_path)


def test_image_configs_name_the_architecture() -> None:
    shim = arm.ConfigArch("arm64")
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": []}}
    out = json.loads(shim.dumps(config, sort_keys=True))
    assert (out["architecture"], out["variant"], out["os"]) == ("arm64", "v8", "linux")
    manifest = {"schemaVersion": 2, "architecture": "amd64"}  # not an image config
    assert json.loads(shim.dumps(manifest)) == manifest
    assert shim.loads("[1]") == [1]


@pytest.mark.skipif(shutil.which(arm.CC) is None, reason="no aarch64 cross compiler")
def test_probe_cross_compiles_to_the_same_aarch64_binary_twice(tmp_path: Path) -> None:
    files = {c2.PROBE: c2.read_app("svcB")[c2.PROBE]}
    trees = []
    for run in ("one", "two"):
        (tmp_path / run).mkdir()
        c2.source_stager(files, True, arm.CC)(str(tmp_path / run))
        trees.append(_tree(tmp_path / run))
    probe = trees[0]["bin/healthprobe"]
    assert trees[0] == trees[1]
    assert probe[:4] == b"\x7fELF" and int.from_bytes(probe[18:20], "little") == 183  # EM_AARCH64
