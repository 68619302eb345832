"""Run the hub app on uvicorn: one process, https when configured, a bounded graceful shutdown."""

from __future__ import annotations

import logging

import uvicorn

from deltaport.errors import UsageError
from deltaport.hub.app import create_app
from deltaport.hub.settings import HubServerSettings, plain_http_refusal
from deltaport.tlsutil import check_server_files

log = logging.getLogger("deltaport.hub")


def uvicorn_config(settings: HubServerSettings, *, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration for SETTINGS (the app is built here, at the edge).

    Raises:
        UsageError: plain HTTP on a non-loopback address without ``insecure = true``, or
            the TLS certificate and key cannot be loaded.
    """
    refusal = plain_http_refusal(settings)
    if refusal is not None:
        raise UsageError(refusal)
    tls = settings.tls
    if tls is not None:
        check_server_files(tls.cert, tls.key)
    else:
        log.warning("hub: serving plain HTTP on %s:%d; device and operator tokens are not "
                    "encrypted (set tls_cert and tls_key in the hub config)",
                    settings.host, settings.port)
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.graceful_shutdown),
        proxy_headers=False,
        server_header=False,
        ssl_certfile=str(tls.cert) if tls is not None else None,
        ssl_keyfile=str(tls.key) if tls is not None else None,
    )


def serve(settings: HubServerSettings, *, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; open requests get ``graceful_shutdown`` seconds."""
    uvicorn.Server(uvicorn_config(settings, log_level=log_level)).run()
