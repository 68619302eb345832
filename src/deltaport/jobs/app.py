"""The procrastinate App on the fleet's PostgreSQL database, its schema, stalled-job retry.

The queue's own tables are procrastinate's (``procrastinate_jobs``, ``_workers``,
``_events``…), applied by :func:`ensure_schema` when a worker starts and when a
queued deploy first needs them, under a PostgreSQL advisory lock so two starting at
once apply it once. They are not an Alembic migration: their DDL belongs to the
pinned procrastinate version (upgrading it means applying procrastinate's own
migrations, docs/workers.md), and the fleet models never read them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from procrastinate import App, PsycopgConnector
from procrastinate.schema import SchemaManager
from sqlalchemy.engine import make_url

from deltaport.errors import UsageError

log = logging.getLogger(__name__)

BUILD_PATCH = "deltaport.build_patch"
ASSEMBLE = "deltaport.assemble_deployment"
SCHEMA_LOCK_ID = 0x64656C74  # "delt": the advisory lock taken while applying the schema
DEFAULT_HEARTBEAT_SECONDS = 10.0
DEFAULT_STALLED_SECONDS = 30.0


def is_postgresql(db_url: str) -> bool:
    """Whether DB_URL (SQLAlchemy form) is a PostgreSQL database."""
    return make_url(db_url).get_backend_name() == "postgresql"


def conninfo(db_url: str) -> str:
    """The libpq URI of a SQLAlchemy PostgreSQL URL (``postgresql+psycopg://…``).

    Raises:
        UsageError: not a PostgreSQL URL (the task queue needs PostgreSQL).
    """
    if not is_postgresql(db_url):
        raise UsageError("patch builds as jobs need the fleet database on PostgreSQL")
    url = make_url(db_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def ensure_schema(db_url: str) -> bool:
    """Apply procrastinate's schema unless it is there; True if it was applied now."""
    with psycopg.connect(conninfo(db_url), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_ID,))
        try:
            row = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
            if row is not None and row[0] is not None:
                return False
            conn.execute(SchemaManager.get_schema())
            log.info("applied the task queue schema (procrastinate)")
            return True
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_ID,))


def make_app(db_url: str, *, register: Callable[[App], None] | None = None) -> App:
    """A procrastinate App on DB_URL with deltaport's tasks (``jobs.tasks.register``)."""
    from deltaport.jobs import tasks

    app = App(connector=PsycopgConnector(conninfo=conninfo(db_url), min_size=1, max_size=4))
    (register or tasks.register)(app)
    return app


async def retry_stalled_forever(app: App, stalled_seconds: float, every: float) -> None:
    """Every EVERY seconds, put back to ``todo`` the jobs of workers silent for STALLED_SECONDS
    (killed mid-build: their job stays ``doing`` and keeps its lock until then)."""
    while True:
        try:
            await retry_stalled(app, stalled_seconds)
        except Exception as exc:  # the database away for a moment: try again next round
            log.warning("looking for stalled jobs failed: %s", exc)
        await asyncio.sleep(every)


async def retry_stalled(app: App, stalled_seconds: float) -> int:
    """One pass of :func:`retry_stalled_forever`; returns how many jobs were retried."""
    stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_seconds)
    n = 0
    for job in stalled:
        log.warning("job %s (%s) stalled: its worker stopped beating; retrying it",
                    job.id, job.task_name)
        try:
            await app.job_manager.retry_job(job)
        except Exception as exc:  # another worker retried it first
            log.info("job %s was not retried here: %s", job.id, exc)
            continue
        n += 1
    return n


def worker_options(name: str, concurrency: int, heartbeat: float, stalled: float,
                   context: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``App.run_worker_async`` for a deltaport worker."""
    return {
        "name": name,
        "concurrency": concurrency,
        "update_heartbeat_interval": heartbeat,
        "stalled_worker_timeout": stalled,
        "additional_context": context,
        "install_signal_handlers": True,
    }
