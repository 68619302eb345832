"""Fixtures for the dashboard tests: the hub tests' fleet and hub (real database, real uvicorn)."""

from __future__ import annotations

from tests.hub.conftest import (  # noqa: F401
    db_url,
    hub,
    postgres,
    smtp_server,
    sqlite_url,
    world,
)
