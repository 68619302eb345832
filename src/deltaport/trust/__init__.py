"""Keys that can change: a root key certifies the online signing keys (docs/trust.md).

- ``keylist`` the key list document: model, canonical payload, root signatures (pure)
- ``policy``  which key list a device holds and which keys it trusts now (pure)
- ``files``   reading and writing key list files (the only I/O)

Imports ``deltaport.bundle`` (key ids, strict JSON) and nothing of fleet, hub,
pipelines or agent.
"""

from deltaport.trust.keylist import (
    FORMAT,
    KEY_LIST_MAX_BYTES,
    CertifiedKey,
    KeyList,
    Role,
    dumps_envelope,
    encode_envelope,
    loads_envelope,
    parse_envelope,
    read_unverified,
)
from deltaport.trust.policy import KeyChoice, choose, is_expired, usable_keys, why_untrusted

__all__ = [
    "FORMAT",
    "KEY_LIST_MAX_BYTES",
    "CertifiedKey",
    "KeyChoice",
    "KeyList",
    "Role",
    "choose",
    "dumps_envelope",
    "encode_envelope",
    "is_expired",
    "loads_envelope",
    "parse_envelope",
    "read_unverified",
    "usable_keys",
    "why_untrusted",
]
