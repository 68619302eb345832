"""Which key list a device holds, and which keys it trusts now: pure decisions.

The device keeps the newest key list its root keys have signed (docs/trust.md,
section 4). Everything here takes the held list, the list a document carries, the
role and the device clock, and returns a decision or a reason; the agent does the I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from deltaport.errors import SignatureError
from deltaport.trust.keylist import KeyList, Role

CLOCK_SKEW_SECONDS = 86_400
"""How far the device clock may be off (no RTC, no NTP over a satellite link): the same
tolerance bundles' ``release.expires_at`` gets (agent/reconstruct.py)."""


@dataclass(frozen=True)
class KeyChoice:
    """The key list to check a signature against, and whether it replaces the held one."""

    current: KeyList | None  # None: no list held or offered (pinned keys only)
    adopt: bool  # True: ``current`` is newer than the held list; store it
    note: str = ""  # why an offered list was not taken (for error messages)


def choose(held: KeyList | None, offered: KeyList | None) -> KeyChoice:
    """The newer of the held and the offered (both already root-verified) key lists.

    An older offered list is ignored, never adopted: key rollback is not possible,
    whatever a document carries.

    Raises:
        SignatureError: both have the same version but different content (an honest
            root never signs two lists with one version).
    """
    if offered is None:
        return KeyChoice(held, adopt=False)
    if held is None or offered.version > held.version:
        return KeyChoice(offered, adopt=True)
    if offered.version == held.version:
        if offered.payload_digest != held.payload_digest:
            raise SignatureError(
                f"two different key lists v{held.version} are signed by the root key "
                f"({held.payload_digest[:19]} held, {offered.payload_digest[:19]} offered): "
                "the root key may be compromised")
        return KeyChoice(held, adopt=False)
    return KeyChoice(held, adopt=False,
                     note=f"it carries key list v{offered.version}, older than the held "
                          f"v{held.version} (key rollback refused)")


def is_expired(key_list: KeyList, now: float, skew: float = CLOCK_SKEW_SECONDS) -> bool:
    """Whether KEY_LIST certifies nothing any more (its own expiry, plus clock skew)."""
    return now > key_list.expires_at + skew


def usable_keys(key_list: KeyList | None, role: Role, now: float,
                skew: float = CLOCK_SKEW_SECONDS) -> tuple[Ed25519PublicKey, ...]:
    """The keys KEY_LIST certifies for ROLE at time NOW (none once the list expired)."""
    if key_list is None or is_expired(key_list, now, skew):
        return ()
    return tuple(k.public_key for k in key_list.keys
                 if role in k.roles and k.not_before - skew <= now <= k.not_after + skew)


def why_untrusted(key_list: KeyList | None, kid: str, role: Role, now: float,
                  skew: float = CLOCK_SKEW_SECONDS) -> str:
    """Pure: why key KID may not sign for ROLE at NOW under KEY_LIST (for messages)."""
    if key_list is None:
        return f"{kid}: no key list is held (provision root_keys and send a key list)"
    where = f"key list v{key_list.version}"
    if is_expired(key_list, now, skew):
        return f"{where} expired at {utc(key_list.expires_at)} (device clock {utc(now)})"
    if kid in key_list.revoked:
        return f"{kid} is revoked in {where}"
    entry = key_list.key(kid)
    if entry is None:
        return f"{kid} is not certified in {where}"
    if role not in entry.roles:
        return f"{kid} is certified in {where} for {', '.join(sorted(entry.roles))}, not {role}"
    if now < entry.not_before - skew:
        return f"{kid} is certified in {where} only from {utc(entry.not_before)}"
    if now > entry.not_after + skew:
        return f"{kid}'s certification in {where} expired at {utc(entry.not_after)}"
    return f"{kid} is certified for {role} in {where}"


def utc(seconds: float) -> str:
    """ISO 8601 UTC of Unix SECONDS, for messages."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
