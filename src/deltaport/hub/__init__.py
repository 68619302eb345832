"""The hub: HTTP API for devices (bundles, status, desired manifest) and operators.

``create_app(settings)`` builds the FastAPI app; ``serve(settings)`` runs it on
uvicorn (``deltaport hub serve``); ``HubClient`` (:mod:`deltaport.hub.client`) is the
operator side's client.

The names below are imported lazily (module ``__getattr__``): every ``deltaport``
command imports ``deltaport.hub.client``, which imports this package first, and
importing FastAPI, SQLAlchemy and the app eagerly would cost each command about a
second of start-up it does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deltaport.hub.app import create_app
    from deltaport.hub.server import serve
    from deltaport.hub.settings import HubServerSettings, load_hub_settings

__all__ = ["HubServerSettings", "create_app", "load_hub_settings", "serve"]

_LAZY: dict[str, str] = {
    "create_app": "deltaport.hub.app",
    "serve": "deltaport.hub.server",
    "HubServerSettings": "deltaport.hub.settings",
    "load_hub_settings": "deltaport.hub.settings",
}
"""Exported name -> the module that defines it, imported on first access."""


def __getattr__(name: str) -> Any:
    """Import the module defining NAME on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
