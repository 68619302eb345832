"""The app factory: settings in, a FastAPI app out, with its database, store and routers.

``create_app(settings)`` opens (and migrates) the database, opens the bundle store
(the data dir's outbox folder), sets up email if SMTP is configured, and mounts the
device and operator routers and the one error handler. Nothing here reads the
environment or config files: :func:`deltaport.hub.settings.load_hub_settings` did.
The OpenAPI document is at ``/openapi.json`` (and ``/docs``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import deltaport
from deltaport.fleet.db import init_db
from deltaport.hub import device, errors, operator, rollouts, ui
from deltaport.hub.audit import AuditMiddleware
from deltaport.hub.deps import HubState
from deltaport.hub.settings import HubServerSettings
from deltaport.hub.toolkit import Toolkit, real_toolkit
from deltaport.notify.email import Notifier, SmtpNotifier
from deltaport.notify.hub import HubOutbox
from deltaport.pipelines.retry import Retrier, load_retry_policy
from deltaport.storage import open_store


def create_app(
    settings: HubServerSettings,
    *,
    toolkit: Toolkit | None = None,
    notifier: Notifier | None = None,
) -> FastAPI:
    """The hub app for SETTINGS; TOOLKIT and NOTIFIER replace the real ones (tests).

    Raises:
        StorageError: the database cannot be opened or migrated.
        UsageError: the database URL is not usable.
    """
    engine = init_db(settings.fleet.db_url, busy_timeout=settings.fleet.db_busy_timeout)
    if notifier is None and settings.fleet.smtp is not None:
        notifier = SmtpNotifier(settings.fleet.smtp)
    store = open_store(settings.fleet.store, settings.fleet.store_dir,
                       s3_endpoint=settings.fleet.s3_endpoint)
    tools = toolkit if toolkit is not None else real_toolkit(settings)
    policy = load_retry_policy(settings.config_path)  # automatic delivery retries
    retrier = Retrier(tools.ranker, tools.builder, store, settings.fleet.data_dir / "retries",
                      policy, mail=notifier is not None) if policy.retries else None
    outbox = HubOutbox(engine, settings.config_path, notifier, smtp=settings.fleet.smtp is not None,
                       retrier=retrier)
    state = HubState(
        settings=settings,
        engine=engine,
        store=store,
        notifier=outbox.notifier,
        toolkit=tools,
        retry_policy=policy,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        outbox.start()  # webhooks and email retries (deltaport.notify.hub)
        yield
        outbox.stop()
        engine.dispose()

    app = FastAPI(
        title="deltaport hub",
        version=getattr(deltaport, "__version__", "0"),
        description="Devices fetch bundles and report status; operators deploy and query.",
        lifespan=lifespan,
    )
    app.state.hub = state
    errors.install(app)
    app.add_middleware(AuditMiddleware, hub=state)  # operator writes → audit log
    app.include_router(device.router)
    app.include_router(operator.router)
    app.include_router(rollouts.router)
    ui.install(app)  # the dashboard under /ui/ (issue 12)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, bool]:
        """Liveness: the process answers (no database round trip)."""
        return {"ok": True}

    return app
