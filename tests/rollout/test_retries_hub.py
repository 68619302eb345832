"""The hub's background loop makes due retries: a real hub (uvicorn in a thread, real
SQLite), a device reporting a failed delivery over the device API, and the bundle offered
again under a retry deployment a moment later, then the original completes."""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.models import DeploymentSet
from deltaport.pipelines import retry
from tests.hub.conftest import World, build_world, fake_toolkit, hub_in_thread

API = "/api/v1/device"


def _message(w: World, status: str, deployment: str, **extra: Any) -> dict[str, Any]:
    return {"message_id": str(uuid.uuid4()), "device": "dev-1", "image_id": w.v2,
            "status": status, "deployment": deployment, "target": "demo/app:v2", **extra}


@pytest.fixture
def world(tmp_path: Path) -> World:
    """The hub tests' fleet (dev-1, dev-2, app:v2 in flight) on SQLite."""
    return build_world(tmp_path / "data", f"sqlite:///{tmp_path / 'hub.db'}")


def test_the_hub_retries_a_failed_delivery_by_itself(world: World, tmp_path: Path) -> None:
    import httpx

    config = tmp_path / "hub.toml"
    config.write_text("[retries]\nretries = 2\nbase = 0.2\ncap = 1\n")
    settings = dataclasses.replace(world.settings(), config_path=config)
    with hub_in_thread(settings, toolkit=fake_toolkit(world.registry)) as url, httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {world.tokens['dev-1']}"},
            timeout=30) as dev:
        failed = _message(world, "failed", world.deployment,
                          reason="missing source layers: sha256:lib1")
        assert dev.post(API + "/status", json={"messages": [failed]}).status_code == 200
        deadline = time.monotonic() + 20
        offers: list[dict[str, Any]] = []
        while not offers and time.monotonic() < deadline:
            time.sleep(0.2)
            offers = dev.get(API + "/bundles").json()["bundles"]
        assert len(offers) == 1, "the hub did not retry within 20 s"
        child = offers[0]["deployment"]
        assert child != world.deployment and offers[0]["digest"] == world.bundles["dev-1"]
        arrived = _message(world, "present", child)
        assert dev.post(API + "/status", json={"messages": [arrived]}).status_code == 200
    engine = init_db(world.db_url)
    try:
        with session_scope(engine) as s:
            assert retry.original_set(s, child) == world.deployment
            [row] = retry.retries_doc(s, world.deployment)
            assert (row["state"], row["retries_made"]) == ("sent", 1)
            original = s.get(DeploymentSet, world.deployment)
            assert original is not None and original.state == "failed"  # dev-2 still waits
    finally:
        engine.dispose()


def test_a_deployment_carries_its_retries(world: World) -> None:
    import httpx

    from deltaport.fleet.models import DeploymentRetry
    from tests.hub.conftest import OPERATOR_TOKEN, REGISTRY

    body = {"manifest": f"services:\n  app:\n    image: {REGISTRY}/demo/app:v1\n",
            "devices": ["dev-2"], "by": "ops", "email": "ops@example.com"}
    with hub_in_thread(world.settings(), toolkit=fake_toolkit(world.registry)) as url, \
            httpx.Client(base_url=url, timeout=30,
                         headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}) as ops:
        assert ops.post("/api/v1/deployments", json={**body, "retries": 99}).status_code == 400
        answer = ops.post("/api/v1/deployments", json={**body, "retries": 1})
        assert answer.status_code == 200, answer.text
    engine = init_db(world.db_url)
    try:
        with session_scope(engine) as s:
            row = s.get(DeploymentRetry, answer.json()["deployment"])
            assert row is not None and row.retries == 1 and row.retry_of is None
    finally:
        engine.dispose()
