"""Webhook endpoints from the ``[[webhooks]]`` tables of the hub config file.

::

    [[webhooks]]
    name = "ops"                       # unique; deliveries name their endpoint by it
    url = "https://ops.example/hooks"
    secret = "..."                     # HMAC-SHA256 key for X-Deltaport-Signature
    kinds = ["deployment.failed"]      # optional: only these event kinds (default: all)

Only :func:`load_webhooks` reads a file; :func:`parse_webhooks` takes the parsed TOML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltaport.config import read_toml_file
from deltaport.errors import FormatError

WEBHOOKS_MAX = 100


@dataclass(frozen=True)
class WebhookEndpoint:
    """One receiver of events: where to POST, the signing key, which kinds it wants."""

    name: str
    url: str
    secret: str
    kinds: tuple[str, ...] = ()

    def wants(self, kind: str) -> bool:
        """True if this endpoint receives events of KIND (all kinds when none are listed)."""
        return not self.kinds or kind in self.kinds


def _endpoint(item: Any, index: int) -> WebhookEndpoint:
    if not isinstance(item, Mapping):
        raise FormatError(f"hub config: webhooks[{index}] must be a table")
    name, url, secret = item.get("name"), item.get("url"), item.get("secret")
    kinds = item.get("kinds", [])
    if not isinstance(name, str) or not name or len(name) > 100:
        raise FormatError(f"hub config: webhooks[{index}].name must be a short string")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise FormatError(f"hub config: webhooks[{index}].url must be an http(s) URL")
    if not isinstance(secret, str) or len(secret) < 16:
        raise FormatError(f"hub config: webhooks[{index}].secret must be 16+ characters")
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise FormatError(f"hub config: webhooks[{index}].kinds must be a list of strings")
    return WebhookEndpoint(name=name, url=url, secret=secret, kinds=tuple(kinds))


def parse_webhooks(raw: Mapping[str, Any]) -> tuple[WebhookEndpoint, ...]:
    """The endpoints of RAW's ``[[webhooks]]`` tables (none when absent).

    Raises:
        FormatError: a table is malformed, or two endpoints share a name.
    """
    items = raw.get("webhooks", [])
    if not isinstance(items, Sequence) or isinstance(items, str) or len(items) > WEBHOOKS_MAX:
        raise FormatError(f"hub config: webhooks must be up to {WEBHOOKS_MAX} [[webhooks]] tables")
    endpoints = tuple(_endpoint(item, i) for i, item in enumerate(items))
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names):
        raise FormatError("hub config: two [[webhooks]] share a name")
    return endpoints


def load_webhooks(path: Path | None) -> tuple[WebhookEndpoint, ...]:
    """The webhook endpoints of the hub config file at PATH (none if it does not exist)."""
    if path is None or not path.exists():
        return ()
    return parse_webhooks(read_toml_file(path))
