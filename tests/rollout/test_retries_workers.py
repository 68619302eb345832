"""``deploy --retries N`` when the hub builds patches with workers (``builds = "workers"``,
real PostgreSQL, a real ``deltaport worker``): the setting rides with the queued request
and is recorded with the set once a worker assembles it, so its failures are retried
N times, not the hub's default."""

from __future__ import annotations

import uuid

import pytest

from deltaport.fleet.db import session_scope
from deltaport.fleet.documents import StatusMessage
from deltaport.fleet.models import DeploymentRetry
from deltaport.jobs.app import make_app
from deltaport.jobs.queue import enqueue_deploy, queued, retries_of
from deltaport.pipelines import retry
from deltaport.pipelines.adapters import SignatureRanker
from deltaport.pipelines.events import handle_status_messages
from deltaport.pipelines.retry_policy import RetryPolicy
from tests.jobs.conftest import JobsFleet, jobs_fleet  # noqa: F401 - fixture


def _retries(fleet: JobsFleet, set_id: str) -> int | None:
    with session_scope(fleet.engine) as s:
        row = s.get(DeploymentRetry, set_id)
        return None if row is None else row.retries


@pytest.mark.slow
def test_deploy_retries_reach_the_set_built_by_workers(jobs_fleet: JobsFleet) -> None:  # noqa: F811
    from fastapi.testclient import TestClient

    from deltaport.fleet.queries import hash_token
    from deltaport.hub.app import create_app
    from deltaport.hub.settings import HubServerSettings, OperatorToken

    fleet = jobs_fleet
    settings = HubServerSettings(fleet=fleet.settings, registry_insecure=True,
                                 operators=(OperatorToken("ops", hash_token("op-token")),))
    body = {"manifest": f"services:\n  app:\n    image: {fleet.host}/app:2\n",
            "devices": ["a"], "by": "ci", "email": "ops@example.com", "retries": 1}
    with TestClient(create_app(settings)) as client:
        answer = client.post("/api/v1/deployments", json=body,
                             headers={"Authorization": "Bearer op-token"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "building"
    by_hub = answer.json()["deployment"]
    plain = enqueue_deploy(fleet.engine, make_app(fleet.db_url), fleet.request(("d",)),
                           ranker=SignatureRanker(), builder=fleet.builder(),
                           store=fleet.store).deployment_id  # no --retries: the default
    row = queued(fleet.engine, by_hub)
    assert row is not None and retries_of(row.request) == 1
    fleet.start_worker("w")
    fleet.wait_state(by_hub)
    fleet.wait_state(plain)
    assert _retries(fleet, by_hub) == 1 and _retries(fleet, plain) is None
    # a failure on the set: one retry allowed, not the hub's three
    handle_status_messages(fleet.engine, [StatusMessage(
        str(uuid.uuid4()), "a", fleet.ids["2"], "failed", reason="missing source layers: x",
        deployment=by_hub)], retry_policy=RetryPolicy())
    with session_scope(fleet.engine) as s:
        assert retry.policy_of(s, by_hub, RetryPolicy()).retries == 1
        assert [d["state"] for d in retry.retries_doc(s, by_hub)] == ["scheduled"]
