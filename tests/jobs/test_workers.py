"""Patch builds as jobs on a real PostgreSQL, with real `deltaport worker` processes."""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from typing import Any, cast

import httpx
import psycopg
import pytest
from sqlalchemy import select

from deltaport.bundle import BundleReader, Release
from deltaport.fleet.db import session_scope
from deltaport.fleet.models import Bundle, BundleRelease, DeploymentSet, Image
from deltaport.fleet.queries import image_info
from deltaport.jobs.app import conninfo
from deltaport.jobs.queue import patch_keys, progress, queued
from deltaport.pipelines.interfaces import BundleSpec
from deltaport.pipelines.planner import config_base
from tests.jobs.conftest import DELTAPORT, JobsFleet, wait_for


def _count(fleet: JobsFleet, sql: str, *args: str) -> int:
    with psycopg.connect(conninfo(fleet.db_url)) as conn:
        row = conn.execute(sql, args).fetchone()
    return int(row[0]) if row else 0


def _jobs(fleet: JobsFleet, status: str) -> int:
    return _count(fleet, "SELECT count(*) FROM procrastinate_jobs WHERE status = %s "
                  "AND task_name = 'deltaport.build_patch'", status)


@pytest.mark.slow
def test_two_workers_race_each_patch_built_once(jobs_fleet: JobsFleet) -> None:
    fleet = jobs_fleet
    fleet.proxy.set_rate(400_000)  # builds take a while: the second deploy comes mid-build
    workers = [fleet.start_worker("w1"), fleet.start_worker("w2")]
    wait_for(lambda: _count(fleet, "SELECT count(*) FROM procrastinate_workers") == 2)
    first = fleet.enqueue(("a", "b"))  # a has app:1 (3 delta patches), b nothing (3 full)
    assert progress(fleet.engine, first)[1] == 6
    wait_for(lambda: _jobs(fleet, "doing") > 0)
    second = fleet.enqueue(("c", "d"))  # the same six patches, needed again at once
    assert set(patch_keys(fleet.engine, second)) == set(patch_keys(fleet.engine, first))
    fleet.wait_state(first)
    fleet.wait_state(second)
    built = Counter(k for w in workers for k in w.built())
    assert set(built) == set(patch_keys(fleet.engine, first))
    assert all(n == 1 for n in built.values()), built  # each distinct patch built once
    assert all(w.built() for w in workers)  # and both workers took a share
    with session_scope(fleet.engine) as s:
        assert {d.state for d in s.scalars(select(DeploymentSet))} == {"pending"}
    assert progress(fleet.engine, second) == (6, 6)


@pytest.mark.slow
def test_killed_worker_job_is_retried_by_another(jobs_fleet: JobsFleet) -> None:
    fleet = jobs_fleet
    fleet.proxy.set_rate(20_000)  # slow enough to be killed in the middle of a build
    set_id = fleet.enqueue(("b",))
    doomed = fleet.start_worker("doomed")
    wait_for(lambda: _jobs(fleet, "doing") == 1)
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.proc.wait(timeout=5)
    assert _jobs(fleet, "doing") == 1  # its job is left doing, holding its lock
    fleet.proxy.set_rate(None)
    rescuer = fleet.start_worker("rescuer", stalled_after=1.5)
    fleet.wait_state(set_id)
    assert doomed.built() == [] and len(rescuer.built()) == 3
    with psycopg.connect(conninfo(fleet.db_url)) as conn:
        retried = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE attempts > 0 "
                               "AND status = 'succeeded'").fetchone()
    assert retried is not None and retried[0] >= 1


def test_bundle_through_workers_has_the_in_process_bytes(jobs_fleet: JobsFleet) -> None:
    fleet = jobs_fleet
    set_id = fleet.enqueue(("a",))
    fleet.start_worker("w")
    fleet.wait_state(set_id)
    with session_scope(fleet.engine) as s:
        bundle = s.scalars(select(Bundle).where(Bundle.deployment_set_id == set_id)).one()
        release = s.get(BundleRelease, bundle.key)
        images = [image_info(i) for i in s.scalars(select(Image))]
    assert release is not None
    target = next(i for i in images if i.image_id == bundle.targets[0])
    holders = tuple(i for i in images if i != target and set(i.diff_ids) <= set(bundle.sources))
    base_id = config_base(target, holders, bundle.sources)  # what the planner chose
    base = next(i for i in images if i.image_id == base_id) if base_id else None
    spec = BundleSpec(bundle.key, target, tuple(bundle.sources), holders,
                      Release(release.version, release.expires_at), config_base=base)
    builder = fleet.builder()
    builder.patch_cache = None  # every patch built here, in this process
    alone = builder.build(spec, fleet.home / "alone")
    queued_bytes = (fleet.settings.store_dir / "bundles" / f"{bundle.key}.dpb").read_bytes()
    assert alone.path.read_bytes() == queued_bytes
    assert bundle.targets[0] == fleet.ids["2"] and len(fleet.workers[0].built()) == 3
    with BundleReader(alone.path) as reader:  # signed, and a real bundle
        assert reader.index.content


@pytest.mark.slow
def test_cli_deploy_returns_building_and_status_shows_the_builds(jobs_fleet: JobsFleet) -> None:
    fleet = jobs_fleet
    compose = fleet.home / "compose.yaml"
    compose.write_text(f"services:\n  app:\n    image: {fleet.host}/app:2\n")

    def cli(*args: str) -> Any:
        done = subprocess.run([str(DELTAPORT), "--data-dir", str(fleet.home), *args, "--json"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    deployed = cli("deploy", str(compose), "--devices", "b", "--by", "ci",
                   "--email", "ops@example.com")
    set_id = deployed["deployment"]
    assert deployed["state"] == "building" and deployed["devices"] == []
    building = cli("status", "deployment", set_id)
    assert building["state"] == "building" and building["builds"] == {"done": 0, "total": 3}
    listed = cli("status", "deployments")
    assert [(d["id"], d["state"]) for d in cast(list[dict[str, Any]], listed)] == [
        (set_id, "building")]
    fleet.start_worker("w")
    fleet.wait_state(set_id)
    recorded = cli("status", "deployment", set_id)
    assert recorded["state"] == "pending" and recorded["builds"] == {"done": 3, "total": 3}
    assert [d["device"] for d in recorded["devices"]] == ["b"]
    listed = {d["id"]: d["state"] for d in cli("status", "deployments")}
    assert listed == {set_id: "pending"}  # once, as a recorded set
    assert recorded["devices"][0]["images"] == {f"{fleet.host}/app:2": "in_transit"}


@pytest.mark.slow
def test_the_hub_answers_building_and_a_worker_records_the_set(jobs_fleet: JobsFleet) -> None:
    from fastapi.testclient import TestClient

    from deltaport.fleet.queries import hash_token
    from deltaport.hub.app import create_app
    from deltaport.hub.settings import HubServerSettings, OperatorToken

    fleet = jobs_fleet
    settings = HubServerSettings(fleet=fleet.settings, registry_insecure=True,
                                 operators=(OperatorToken("ops", hash_token("op-token")),))
    body = {"manifest": f"services:\n  app:\n    image: {fleet.host}/app:2\n",
            "devices": ["a"], "by": "ci", "email": "ops@example.com"}
    with TestClient(create_app(settings)) as client:
        auth = {"Authorization": "Bearer op-token"}
        answer = client.post("/api/v1/deployments", json=body, headers=auth)
        assert answer.status_code == 200, answer.text
        set_id = answer.json()["deployment"]
        assert answer.json()["state"] == "building"
        status = client.get(f"/api/v1/deployments/{set_id}", headers=auth).json()
        assert status["state"] == "building" and status["builds"] == {"done": 0, "total": 3}
        fleet.start_worker("w")
        fleet.wait_state(set_id)
        status = client.get(f"/api/v1/deployments/{set_id}", headers=auth).json()
    assert status["state"] == "pending" and status["builds"] == {"done": 3, "total": 3}
    assert [d["device"] for d in status["devices"]] == ["a"]


def test_a_patch_that_cannot_be_built_fails_its_deployment(jobs_fleet: JobsFleet) -> None:
    fleet = jobs_fleet
    set_id = fleet.enqueue(("b",))
    with session_scope(fleet.engine) as s:
        digest = s.scalars(select(Image.manifest_digest)
                           .where(Image.image_id == fleet.ids["2"])).one()
    gone = httpx.delete(f"{fleet.proxy.url}/v2/app/manifests/{digest}")  # the image is deleted
    assert gone.status_code == 202, gone.text
    fleet.start_worker("w")
    fleet.wait_state(set_id, "failed")
    row = queued(fleet.engine, set_id)
    assert row is not None and row.error is not None and "not built" in row.error
    assert progress(fleet.engine, set_id) == (0, 3)
    wait_for(lambda: _jobs(fleet, "todo") + _jobs(fleet, "doing") == 0)
    assert _jobs(fleet, "failed") == 3  # each tried once: a 404 is no reason to try again
