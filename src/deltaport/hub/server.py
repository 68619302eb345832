"""Run the hub app on uvicorn: one process, with a bounded graceful shutdown."""

from __future__ import annotations

import uvicorn

from deltaport.hub.app import create_app
from deltaport.hub.settings import HubServerSettings


def uvicorn_config(settings: HubServerSettings, *, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration for SETTINGS (the app is built here, at the edge)."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.graceful_shutdown),
        proxy_headers=False,
        server_header=False,
    )


def serve(settings: HubServerSettings, *, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; open requests get ``graceful_shutdown`` seconds."""
    uvicorn.Server(uvicorn_config(settings, log_level=log_level)).run()
