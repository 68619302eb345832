"""Several hubs started at once on a new PostgreSQL database: one migrates, the others wait.

Without a lock two processes running the migrations at once both create the tables and
one fails ("relation ... already exists"), so a fleet of hubs could not be started
together (systemd, a container orchestrator) on a fresh database.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from deltaport.fleet.db import init_db
from tests.fleet.conftest import PostgresServer, postgres  # noqa: F401

STARTERS = 4


@pytest.mark.parametrize("attempt", range(2))
def test_hubs_migrating_a_new_database_at_once(
    postgres: PostgresServer, attempt: int  # noqa: F811
) -> None:
    url = postgres.url(postgres.new_database())
    with ThreadPoolExecutor(STARTERS) as pool:
        engines = list(pool.map(lambda _: init_db(url), range(STARTERS)))
    try:
        with engines[0].connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            tables = conn.execute(text(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar_one()
        assert len(versions) == 1 and tables > 10
    finally:
        for engine in engines:
            engine.dispose()
