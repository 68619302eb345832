"""Limits the device and the hub agree on for the documents a device sends.

Neutral ground: the agent may not import the fleet (the server side), and the fleet's
parsers must cut and refuse at exactly the sizes the agent writes.
"""

from __future__ import annotations

INVENTORY_MAX_IMAGES = 10_000  # images one inventory lists; also the agent's listing bound
TEXT_MAX_CHARS = 4000  # failure reasons and names are cut here
