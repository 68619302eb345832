"""Limits the device and the hub agree on for the documents a device sends.

Neutral ground: the agent may not import the fleet (the server side), and the fleet's
parsers must cut and refuse at exactly the sizes the agent writes.
"""

from __future__ import annotations

INVENTORY_MAX_IMAGES = 10_000  # images one inventory lists; also the agent's listing bound
TEXT_MAX_CHARS = 4000  # failure reasons and names are cut here

# Deployment manifests (IoT Edge, Compose) read by the hub and the CLI: untrusted text.
MANIFEST_MAX_BYTES = 4 * 1024 * 1024  # a document, before any expansion
MANIFEST_MAX_ALIASES = 10_000  # YAML alias uses in one document
MANIFEST_MAX_NODES = 1_000_000  # nodes once every alias is expanded (billion laughs)
MANIFEST_MAX_DEPTH = 64  # nesting of mappings and sequences
