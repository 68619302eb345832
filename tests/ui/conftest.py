"""Fixtures for the dashboard tests: the hub tests' fleet and hub (real database, real uvicorn)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from deltaport.fleet.queries import hash_token
from deltaport.hub.app import create_app
from deltaport.hub.settings import OperatorRole, OperatorToken
from tests.fleet.conftest import postgres, smtp_server  # noqa: F401
from tests.hub.conftest import (  # noqa: F401
    OPERATOR_TOKEN,
    World,
    any_world,
    db_url,
    fake_toolkit,
    hub,
    sqlite_url,
    world,
)


def sign_in(client: httpx.Client, token: str = OPERATOR_TOKEN, next_path: str = "/ui/"
            ) -> httpx.Response:
    """Fetch the login form (its nonce cookie) and post TOKEN with it."""
    form = client.get("/ui/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce is not None, form.text
    return client.post("/ui/login", data={"token": token, "nonce": nonce.group(1),
                                          "next": next_path}, follow_redirects=False)


def csrf_of(page: str) -> str:
    """The CSRF token in a dashboard page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


@pytest.fixture
def app_client(world: World) -> Iterator[TestClient]:  # noqa: F811
    """The hub app on SQLite through Starlette's TestClient (no session yet)."""
    app = create_app(world.settings(), toolkit=fake_toolkit(world.registry))
    with TestClient(app, follow_redirects=False) as client:
        yield client


VIEWER_TOKEN = "viewer-secret-token-for-tests-0123456789"  # as tests/ui/test_roles.py


@pytest.fixture
def ui(any_world: World) -> Iterator[TestClient]:  # noqa: F811
    """The app on SQLite and PostgreSQL with an operator ``ops`` and a viewer ``vera``."""
    settings = any_world.settings()
    settings = dataclasses.replace(settings, operators=(
        *settings.operators,
        OperatorToken("vera", hash_token(VIEWER_TOKEN), OperatorRole.VIEWER)))
    with TestClient(create_app(settings, toolkit=fake_toolkit(any_world.registry)),
                    follow_redirects=False) as client:
        yield client
