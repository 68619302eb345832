"""`deltaport worker`: build patches and assemble deployments from the task queue.

Runs anywhere with the fleet database (PostgreSQL), the bundle store (the same
``store`` / outbox as the hubs) and the cloud registry; the data dir gives the
signing keys and a local patch cache. Stop it with SIGINT/SIGTERM (the running job
finishes first); a worker killed outright leaves its job to another worker once its
heartbeat is older than ``--stalled-after`` seconds. See docs/workers.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Annotated

import typer

from deltaport.cli.fleet import open_db, settings, store_for

DEFAULT_STALLED_CHECK_SECONDS = 5.0


def worker_command(
    ctx: typer.Context,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Jobs run at once in this process.")
    ] = 1,
    name: Annotated[
        str | None, typer.Option("--name", help="Worker name (default host-pid).")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Plain HTTP registries.")
    ] = False,
    heartbeat: Annotated[
        float, typer.Option("--heartbeat", min=0.1, help="Seconds between heartbeats.")
    ] = 10.0,
    stalled_after: Annotated[
        float, typer.Option("--stalled-after", min=0.5,
                            help="A worker silent this long is dead: its job is retried.")
    ] = 30.0,
) -> None:
    """Run patch builds and deployment assembly from the queue (PostgreSQL only)."""
    from deltaport.jobs.app import ensure_schema, make_app, retry_stalled_forever, worker_options
    from deltaport.jobs.tasks import RUNTIME, Runtime
    from deltaport.oci import TransportOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    s = settings(ctx)
    ensure_schema(s.db_url)  # raises UsageError on SQLite
    engine = open_db(s)
    worker_name = name or f"{socket.gethostname()}-{os.getpid()}"
    runtime = Runtime(settings=s, engine=engine, store=store_for(s),
                      options=TransportOptions(insecure=insecure), name=worker_name)
    app = make_app(s.db_url)
    options = worker_options(worker_name, concurrency, heartbeat, stalled_after,
                             {RUNTIME: runtime})

    async def run() -> None:
        async with app.open_async():
            check = asyncio.create_task(retry_stalled_forever(
                app, stalled_after, min(DEFAULT_STALLED_CHECK_SECONDS, stalled_after)))
            try:
                await app.run_worker_async(**options)
            finally:
                check.cancel()

    try:
        asyncio.run(run())
    finally:
        engine.dispose()


