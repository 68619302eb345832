"""The pure parts of the task queue: patch identities, the request as JSON, the switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltaport.config import load_settings
from deltaport.delta.model import DeltaConfig
from deltaport.delta.patchcache import patch_key
from deltaport.errors import FormatError, UsageError
from deltaport.fleet.identity import ImageInfo
from deltaport.jobs.app import conninfo
from deltaport.jobs.identity import PatchJob, bundle_patch_jobs, distinct_jobs
from deltaport.jobs.queue import request_doc, request_from_doc, uses_workers
from deltaport.pipelines.image_to_device import DeployRequest
from deltaport.pipelines.interfaces import BundleSpec
from deltaport.pipelines.manifest import parse_manifest


def _img(name: str, *layers: str) -> ImageInfo:
    return ImageInfo(name, f"sha256:{name[-1]}" * 1, tuple(layers), tuple(1 for _ in layers))


def test_a_bundle_needs_one_patch_per_layer_the_sources_lack() -> None:
    old = _img("reg:5000/app:1", "sha256:base", "sha256:lib1")
    other = _img("reg:5000/tool:1", "sha256:base", "sha256:tool")  # not all its layers chosen
    new = _img("reg:5000/app:2", "sha256:base", "sha256:lib2", "sha256:cfg2")
    spec = BundleSpec("k", new, ("sha256:base", "sha256:lib1"), (old, other))
    jobs = bundle_patch_jobs(spec)
    candidates = ["sha256:base", "sha256:lib1"]
    assert [j.diff_id for j in jobs] == ["sha256:lib2", "sha256:cfg2"]  # base is on the device
    assert [j.key for j in jobs] == [patch_key(d, candidates, DeltaConfig())
                                     for d in ("sha256:lib2", "sha256:cfg2")]
    assert jobs[0].target_ref == "docker://reg:5000/app:2"
    assert jobs[0].source_refs == ("docker://reg:5000/app:1",)
    assert PatchJob.from_args(jobs[1].to_args()) == jobs[1]
    first_image = bundle_patch_jobs(BundleSpec("k0", new, (), ()))
    assert {j.key for j in first_image}.isdisjoint(j.key for j in jobs)  # other sources
    assert distinct_jobs([*jobs, *jobs, *first_image]) == [*jobs, *first_image]


def test_the_request_survives_the_queue() -> None:
    manifest = parse_manifest(b"services:\n  app:\n    image: reg:5000/app:2\n")
    request = DeployRequest(manifest, "ci", "ops@example.com", ("a", "b"), {"site": "x"},
                            priority=-3, unsigned=True)
    assert request_from_doc(request_doc(request)) == request


def test_workers_only_on_postgresql_and_when_asked(tmp_path: Path) -> None:
    pg = "postgresql://u@db/fleet"
    assert not uses_workers(load_settings(tmp_path, env={}))  # the embedded default
    assert not uses_workers(load_settings(tmp_path, env={"DELTAPORT_BUILDS": "workers"}))
    assert not uses_workers(load_settings(tmp_path, pg, env={}))
    assert uses_workers(load_settings(tmp_path, pg, env={"DELTAPORT_BUILDS": "workers"}))
    (tmp_path / "config.toml").write_text('builds = "sometimes"\n')
    with pytest.raises(FormatError, match="builds must be one of"):
        load_settings(tmp_path, env={})
    with pytest.raises(UsageError, match="PostgreSQL"):
        conninfo(f"sqlite:///{tmp_path}/x.db")
    assert conninfo("postgresql+psycopg://u:pw@db:5433/fleet") == "postgresql://u:pw@db:5433/fleet"


def test_a_building_deploy_says_who_builds_it(capsys: pytest.CaptureFixture[str]) -> None:
    from deltaport.cli.deploy import _print

    _print({"deployment": "d-1", "state": "building", "devices": [], "built": [],
            "reused": []}, False)
    out = capsys.readouterr().out
    assert "d-1 building" in out and "deltaport worker" in out
    assert "deltaport status deployment d-1" in out
