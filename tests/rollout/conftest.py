"""The fleet fixtures (real SQLite and PostgreSQL, a fleet of four devices) for rollouts,
and notify's real HTTP receiver."""
# ruff: noqa: F401  (fixtures are found by name)

from tests.fleet.conftest import db_url, engine, postgres, smtp_server, sqlite_url
from tests.fleet.test_pipelines import fleet
from tests.notify.conftest import receiver
