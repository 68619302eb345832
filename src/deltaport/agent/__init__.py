"""The device agent: inbox, hub downloader, reconstruction, durable status outbox.

``deltaport agent run --config agent.toml`` builds an :class:`AgentConfig` with
:func:`load_config` and runs an :class:`Agent`. The hub contract it speaks is
docs/hub-api.md.
"""

from deltaport.agent.agent import Agent
from deltaport.agent.config import AgentConfig, HubSettings, config_from_mapping, load_config
from deltaport.agent.hub import BundleOffer, HubClient
from deltaport.agent.passreport import PassReport
from deltaport.agent.state import AgentState

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentState",
    "BundleOffer",
    "HubClient",
    "HubSettings",
    "PassReport",
    "config_from_mapping",
    "load_config",
]
