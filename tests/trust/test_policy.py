"""Which key list a device holds and which keys it trusts now; making the next list (pure)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from deltaport.bundle import key_id
from deltaport.errors import SignatureError, UsageError
from deltaport.trust import (
    CertifiedKey,
    KeyList,
    Role,
    choose,
    encode_envelope,
    parse_envelope,
    usable_keys,
    why_untrusted,
)
from deltaport.trust.issue import DAY, certify, renew, revoke
from deltaport.trust.policy import CLOCK_SKEW_SECONDS

ROOT = Ed25519PrivateKey.generate()
A, B = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
NOW = 1_800_000_000


def _signed(key_list: KeyList) -> KeyList:
    """KEY_LIST as a device sees it: through its root-signed envelope."""
    return parse_envelope(encode_envelope(key_list, [ROOT]), [ROOT.public_key()])


V1 = _signed(certify(None, A.public_key(), [Role.BUNDLE], now=NOW, days=90))
V2 = _signed(certify(V1, B.public_key(), [Role.MANIFEST], now=NOW, days=90))


def test_a_newer_list_is_adopted_an_older_one_ignored() -> None:
    assert choose(None, V1).current is V1 and choose(None, V1).adopt
    assert choose(V1, V2).current is V2 and choose(V1, V2).adopt
    older = choose(V2, V1)
    assert older.current is V2 and not older.adopt
    assert "v1, older than the held v2" in older.note
    assert choose(V2, None) == choose(V2, None).__class__(V2, adopt=False)


def test_the_same_list_again_changes_nothing() -> None:
    again = choose(V1, _signed(certify(None, A.public_key(), [Role.BUNDLE], now=NOW, days=90)))
    assert again.current is V1 and not again.adopt


def test_two_lists_with_one_version_mean_a_compromised_root() -> None:
    other = _signed(certify(None, B.public_key(), [Role.BUNDLE], now=NOW, days=90))
    with pytest.raises(SignatureError, match="root key may be compromised"):
        choose(V1, other)


def test_keys_are_usable_for_their_roles_inside_their_window() -> None:
    assert [key_id(k) for k in usable_keys(V2, Role.BUNDLE, NOW)] == [key_id(A.public_key())]
    assert [key_id(k) for k in usable_keys(V2, Role.MANIFEST, NOW)] == [key_id(B.public_key())]
    assert usable_keys(V2, Role.BUNDLE, NOW - CLOCK_SKEW_SECONDS - 1) == ()
    assert len(usable_keys(V2, Role.BUNDLE, NOW - CLOCK_SKEW_SECONDS)) == 1  # skew tolerated
    assert usable_keys(V2, Role.BUNDLE, NOW + 90 * DAY + CLOCK_SKEW_SECONDS + 1) == ()
    assert usable_keys(None, Role.BUNDLE, NOW) == ()


def test_an_expired_list_certifies_nothing() -> None:
    assert usable_keys(V1, Role.BUNDLE, V1.expires_at + CLOCK_SKEW_SECONDS + 1) == ()
    assert "key list v1 expired at" in why_untrusted(
        V1, key_id(A.public_key()), Role.BUNDLE, V1.expires_at + CLOCK_SKEW_SECONDS + 1)


@given(now=st.integers(0, 2 * NOW), role=st.sampled_from(list(Role)))
def test_usable_keys_are_exactly_those_certified_now_for_the_role(now: int, role: Role) -> None:
    usable = {key_id(k) for k in usable_keys(V2, role, now)}
    for entry in V2.keys:
        reason = why_untrusted(V2, entry.key_id, role, now)
        certified_now = reason.endswith(f"is certified for {role} in key list v2")
        assert (entry.key_id in usable) == certified_now


def test_why_a_key_is_not_trusted() -> None:
    v3 = _signed(revoke(V2, key_id(A.public_key()), now=NOW))
    a, b = key_id(A.public_key()), key_id(B.public_key())
    assert why_untrusted(v3, a, Role.BUNDLE, NOW) == f"{a} is revoked in key list v3"
    assert why_untrusted(V1, b, Role.BUNDLE, NOW) == f"{b} is not certified in key list v1"
    assert "for manifest, not bundle" in why_untrusted(V2, b, Role.BUNDLE, NOW)
    assert "only from" in why_untrusted(V2, a, Role.BUNDLE, NOW - 3 * DAY)
    assert "certification in key list v2 expired" in why_untrusted(V2, a, Role.BUNDLE,
                                                                   NOW + 100 * DAY)
    assert "no key list is held" in why_untrusted(None, a, Role.BUNDLE, NOW)


def test_every_change_makes_the_next_version() -> None:
    v3 = revoke(V2, key_id(A.public_key()), now=NOW + 1)
    assert (v3.version, v3.revoked, [k.key_id for k in v3.keys]) == (
        3, frozenset({key_id(A.public_key())}), [key_id(B.public_key())])
    v4 = renew(v3, now=NOW + 2, list_days=30)
    assert (v4.version, v4.expires_at, v4.revoked) == (4, NOW + 2 + 30 * DAY, v3.revoked)
    # recertifying a key replaces its entry
    v5 = certify(v4, B.public_key(), [Role.BUNDLE, Role.MANIFEST], now=NOW + 3, days=10)
    assert [(k.roles, k.not_after) for k in v5.keys] == [
        (frozenset({Role.BUNDLE, Role.MANIFEST}), NOW + 3 + 10 * DAY)]


def test_ended_certifications_are_dropped_on_the_next_change() -> None:
    later = certify(V1, B.public_key(), [Role.BUNDLE], now=NOW + 91 * DAY, days=90)
    assert [k.key_id for k in later.keys] == [key_id(B.public_key())]


def test_revocation_is_final_and_checked() -> None:
    v3 = revoke(V2, key_id(A.public_key()), now=NOW)
    with pytest.raises(UsageError, match="revocation is final"):
        certify(v3, A.public_key(), [Role.BUNDLE], now=NOW, days=1)
    with pytest.raises(UsageError, match="already revoked"):
        revoke(v3, key_id(A.public_key()), now=NOW)
    with pytest.raises(UsageError, match="not certified"):
        revoke(V1, key_id(B.public_key()), now=NOW)
    with pytest.raises(UsageError, match="role"):
        certify(V1, B.public_key(), [], now=NOW, days=1)


def test_a_certified_key_names_itself() -> None:
    entry = CertifiedKey(A.public_key(), frozenset({Role.BUNDLE}), 0, 1)
    assert entry.key_id == key_id(A.public_key())
    assert V2.key(entry.key_id) is not None and V2.key("ed25519:" + "0" * 32) is None
