"""The fleet fixtures (real SQLite and PostgreSQL, a fleet of four devices) for rollouts."""
# ruff: noqa: F401  (fixtures are found by name)

from tests.fleet.conftest import db_url, engine, postgres, sqlite_url
from tests.fleet.test_pipelines import fleet
