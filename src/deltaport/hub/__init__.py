"""The hub: HTTP API for devices (bundles, status, desired manifest) and operators.

``create_app(settings)`` builds the FastAPI app; ``serve(settings)`` runs it on
uvicorn (``deltaport hub serve``); ``HubClient`` is the operator side's client.
"""

from deltaport.hub.app import create_app
from deltaport.hub.server import serve
from deltaport.hub.settings import HubServerSettings, load_hub_settings

__all__ = ["HubServerSettings", "create_app", "load_hub_settings", "serve"]
