"""The registry fixture starts the real registry and it speaks the v2 API."""

from __future__ import annotations

import httpx

from tests.fixtures.services import Registry


def test_registry_answers_v2(registry: Registry) -> None:
    response = httpx.get(f"{registry.url}/v2/")
    assert response.status_code == 200
    assert response.headers.get("docker-distribution-api-version") == "registry/2.0"
