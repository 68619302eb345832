"""The signed desired manifest: what one device should run, by version (docs/desired-manifest.md).

The hub signs it (``deltaport.pipelines.manifest_to_device``), the agent verifies it
(``deltaport.agent.runtime``); both use only this package, so neither side can drift.
"""

from deltaport.desired.document import (
    DESIRED_MAX_BYTES,
    FORMAT,
    DesiredModule,
    DesiredState,
    ManifestKind,
    decode_envelope,
    encode_envelope,
    payload_bytes,
)

__all__ = [
    "DESIRED_MAX_BYTES",
    "FORMAT",
    "DesiredModule",
    "DesiredState",
    "ManifestKind",
    "decode_envelope",
    "encode_envelope",
    "payload_bytes",
]
