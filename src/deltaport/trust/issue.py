"""Making the next key list from the previous one: certify, revoke, renew (pure).

Every change produces a new version (previous + 1), so devices adopt it and refuse
the older one from then on. Keys whose certification ended are dropped on the way.
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from deltaport.bundle.keys import key_id
from deltaport.errors import UsageError
from deltaport.trust.keylist import MAX_TIME, CertifiedKey, KeyList, Role

DAY = 86_400
DEFAULT_LIST_DAYS = 365
"""How long a key list certifies anything: devices refuse an expired one (freeze attack),
so the root must sign a new list before then, even when nothing changed."""


def _next(previous: KeyList | None, keys: Iterable[CertifiedKey], revoked: frozenset[str],
          now: int, list_days: int) -> KeyList:
    if list_days <= 0:
        raise UsageError("a key list must be valid for at least one day")
    alive = tuple(k for k in keys if k.not_after >= now)
    return KeyList(
        version=(previous.version + 1) if previous is not None else 1,
        issued_at=now,
        expires_at=min(now + list_days * DAY, MAX_TIME),
        keys=alive,
        revoked=revoked,
    )


def certify(previous: KeyList | None, public_key: Ed25519PublicKey, roles: Iterable[Role], *,
            now: int, days: int, list_days: int = DEFAULT_LIST_DAYS) -> KeyList:
    """PREVIOUS plus PUBLIC_KEY for ROLES from NOW for DAYS (replacing its old entry).

    Raises:
        UsageError: no role, DAYS not positive, or the key was revoked (revocation is
            for good: make a new key).
    """
    role_set = frozenset(roles)
    if not role_set or days <= 0:
        raise UsageError("certify needs at least one role and a positive number of days")
    kid = key_id(public_key)
    revoked = previous.revoked if previous is not None else frozenset()
    if kid in revoked:
        raise UsageError(f"{kid} was revoked; revocation is final: generate a new key")
    others = [k for k in (previous.keys if previous else ()) if k.key_id != kid]
    entry = CertifiedKey(public_key, role_set, now, min(now + days * DAY, MAX_TIME))
    return _next(previous, [*others, entry], revoked, now, list_days)


def revoke(previous: KeyList, kid: str, *, now: int,
           list_days: int = DEFAULT_LIST_DAYS) -> KeyList:
    """PREVIOUS without key KID, which is listed as revoked from now on.

    Raises:
        UsageError: KID is not certified in PREVIOUS (nor already revoked).
    """
    if kid in previous.revoked:
        raise UsageError(f"{kid} is already revoked in key list v{previous.version}")
    if previous.key(kid) is None:
        raise UsageError(f"{kid} is not certified in key list v{previous.version} "
                         f"(certified: {', '.join(k.key_id for k in previous.keys) or 'none'})")
    keys = [k for k in previous.keys if k.key_id != kid]
    return _next(previous, keys, previous.revoked | {kid}, now, list_days)


def renew(previous: KeyList, *, now: int, list_days: int = DEFAULT_LIST_DAYS) -> KeyList:
    """PREVIOUS again with a new version and expiry (before the old one runs out)."""
    return _next(previous, previous.keys, previous.revoked, now, list_days)
