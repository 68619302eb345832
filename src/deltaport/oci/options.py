"""TransportOptions: how to reach and read images, passed in, never read from globals."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deltaport.oci.model import Platform

MiB = 1 << 20


@dataclass(frozen=True)
class TransportOptions:
    """Settings for opening image sources and destinations.

    insecure: allow plain http / unverified https for any registry (localhost and
        127.0.0.0/8 always use plain http).
    ca_file: a PEM bundle of extra CAs to trust for registries (self-signed device or
        cloud registries), added to the system and certifi CAs.
    username/password: registry credentials (basic auth, or to obtain Bearer tokens).
    platform: which image to pick from an index / manifest list.
    chunk_size: bytes per PATCH of a chunked blob upload (held in memory once).
    retries: attempts after a transient failure (5xx, connection reset) per request.
    """

    insecure: bool = False
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None
    platform: Platform = field(default_factory=Platform.host)
    chunk_size: int = 8 * MiB
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3
    retry_backoff: float = 0.2
    max_manifest_bytes: int = 4 * MiB
    max_config_bytes: int = 16 * MiB
    temp_dir: Path | None = None
