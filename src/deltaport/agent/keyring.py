"""The device's keyring: root keys provisioned once, signing keys learnt from key lists.

A bundle or desired manifest may carry the root-signed key list (docs/trust.md). The
keyring verifies it against the root keys, keeps the newest one in the agent state
(``key_list`` table, never lowered) and answers which keys may sign for its role now.
The decisions are :mod:`deltaport.trust.policy`'s; this class only loads and stores.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from deltaport.agent.state import AgentState
from deltaport.bundle import Keyring, ResolvedKeys, TrustedKeys, key_id, load_public_key
from deltaport.errors import DeltaportError
from deltaport.trust import KeyList, Role, choose, loads_envelope, parse_envelope
from deltaport.trust.policy import usable_keys, why_untrusted

log = logging.getLogger(__name__)

TRUST_DOMAIN = "key-list"
"""What releases signed by any certified key are counted under (agent ``releases``):
a rotation to a new key must not reset replay protection."""


class DeviceKeyring:
    """Keys for one role (bundle or manifest), from root keys and the held key list.

    ``pinned`` keys (``trusted_keys`` / ``runtime.manifest_keys``) are trusted as well,
    for ever: the pinned-keys mode, kept for devices provisioned before key lists.
    """

    def __init__(self, *, roots: Sequence[Ed25519PublicKey], state: AgentState, role: Role,
                 pinned: Sequence[Ed25519PublicKey] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.roots = tuple(roots)
        self.state = state
        self.role = role
        self.pinned = tuple(pinned)
        self.clock = clock

    def held(self) -> KeyList | None:
        """The held key list, verified again against the root keys (None: none held)."""
        row = self.state.key_list()
        if row is None:
            return None
        try:
            return parse_envelope(loads_envelope(row[1].encode("utf-8")), self.roots)
        except DeltaportError as exc:  # the root keys were changed: start again
            log.warning("held key list v%d no longer verifies (%s); ignoring it", row[0], exc)
            return None

    def resolve(self, key_list: Mapping[str, Any] | None) -> ResolvedKeys:
        """The keys that may sign now, after adopting KEY_LIST if it is newer.

        Raises:
            SignatureError: KEY_LIST is not signed by a root key, or contradicts the
                held list (same version, other content).
            FormatError: KEY_LIST is malformed.
        """
        offered = parse_envelope(key_list, self.roots) if key_list is not None else None
        choice = choose(self.held(), offered)
        if choice.adopt and choice.current is not None and key_list is not None:
            self.state.hold_key_list(choice.current.version,
                                     json.dumps(dict(key_list), sort_keys=True))
            log.info("key list v%d adopted (signed by root %s)", choice.current.version,
                     choice.current.signer)
        now = self.clock()
        certified = usable_keys(choice.current, self.role, now)
        current, note = choice.current, choice.note

        def explain(kid: str) -> str:
            reason = why_untrusted(current, kid, self.role, now)
            return f"{reason}; {note}" if note else reason

        return ResolvedKeys((*self.pinned, *certified), explain,
                            frozenset(key_id(k) for k in certified), TRUST_DOMAIN)


def keys_for(roots: Sequence[Path], state: AgentState, role: Role,
             pinned: Sequence[Ed25519PublicKey]) -> TrustedKeys:
    """The pinned keys alone (no root keys configured), or a keyring over them.

    Raises:
        StorageError, FormatError: a root key file cannot be read.
    """
    if not roots:
        return list(pinned)
    return DeviceKeyring(roots=[load_public_key(p) for p in roots], state=state, role=role,
                         pinned=pinned)


def current_keys(trusted: TrustedKeys) -> list[Ed25519PublicKey]:
    """The keys trusted now, without offering a key list (a bundle already checked)."""
    return list(trusted.resolve(None).keys) if isinstance(trusted, Keyring) else list(trusted)
