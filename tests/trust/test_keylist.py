"""The key list document: canonical round trip, root signatures, strict parsing (pure)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from deltaport.bundle import key_id
from deltaport.errors import DeltaportError, FormatError, SignatureError
from deltaport.trust import (
    CertifiedKey,
    KeyList,
    Role,
    dumps_envelope,
    encode_envelope,
    loads_envelope,
    parse_envelope,
    read_unverified,
)
from deltaport.trust.keylist import KEY_LIST_MAX_BYTES, MAX_TIME

ROOT = Ed25519PrivateKey.generate()
KEYS = [Ed25519PrivateKey.generate() for _ in range(4)]
NOW = 1_800_000_000


def _list(version: int = 1, *, keys: tuple[CertifiedKey, ...] | None = None,
          revoked: frozenset[str] = frozenset()) -> KeyList:
    certified = keys if keys is not None else (
        CertifiedKey(KEYS[0].public_key(), frozenset({Role.BUNDLE}), NOW, NOW + 90 * 86_400),)
    return KeyList(version, NOW, NOW + 365 * 86_400, certified, revoked)


def _payload(envelope: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(envelope["payload"])))


def _resign(payload: dict[str, Any], key: Ed25519PrivateKey = ROOT) -> dict[str, Any]:
    """An envelope over PAYLOAD as given, signed by KEY (a legitimate root, if ROOT)."""
    raw = json.dumps(payload).encode()
    signature = key.sign(b"deltaport-key-list\x00" + raw)
    return {"format": "deltaport.key-list/1", "payload": base64.b64encode(raw).decode(),
            "signatures": [{"key_id": key_id(key.public_key()),
                            "signature": base64.b64encode(signature).decode()}]}


entries = st.builds(
    lambda i, roles, start, length: CertifiedKey(
        KEYS[i].public_key(), frozenset(roles), start, min(start + length, MAX_TIME)),
    st.integers(0, len(KEYS) - 1), st.sets(st.sampled_from(list(Role)), min_size=1),
    st.integers(0, MAX_TIME), st.integers(0, 10**9))


@given(version=st.integers(1, 2**53 - 1), items=st.lists(entries, max_size=4,
                                                          unique_by=lambda k: k.key_id),
       expires=st.integers(0, MAX_TIME))
def test_a_signed_list_reads_back_as_written(version: int, items: list[CertifiedKey],
                                             expires: int) -> None:
    written = KeyList(version, NOW, expires, tuple(items))
    envelope = loads_envelope(dumps_envelope(encode_envelope(written, [ROOT])))
    read = parse_envelope(envelope, [ROOT.public_key()])
    assert (read.version, read.expires_at, read.revoked) == (version, expires, frozenset())
    assert {(k.key_id, k.roles, k.not_before, k.not_after) for k in read.keys} == {
        (k.key_id, k.roles, k.not_before, k.not_after) for k in items}
    assert read.signer == key_id(ROOT.public_key())
    assert read.payload_digest == read_unverified(envelope).payload_digest


def test_a_list_signed_by_another_key_is_refused() -> None:
    envelope = encode_envelope(_list(), [KEYS[0]])
    with pytest.raises(SignatureError, match="not a trusted root key"):
        parse_envelope(envelope, [ROOT.public_key()])


def test_an_altered_payload_is_refused() -> None:
    envelope = encode_envelope(_list(), [ROOT])
    payload = _payload(envelope)
    payload["version"] = 7
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(SignatureError, match="does not verify"):
        parse_envelope(envelope, [ROOT.public_key()])


def test_an_unsigned_list_is_refused() -> None:
    with pytest.raises(SignatureError, match="no key"):
        parse_envelope(encode_envelope(_list(), []), [ROOT.public_key()])


def test_a_second_root_may_sign() -> None:
    backup = Ed25519PrivateKey.generate()
    read = parse_envelope(encode_envelope(_list(), [backup]),
                          [ROOT.public_key(), backup.public_key()])
    assert read.signer == key_id(backup.public_key())


@pytest.mark.parametrize(("edit", "message"), [
    (lambda p: p.update(version=0), "version"),
    (lambda p: p.update(version=True), "version"),
    (lambda p: p.update(extra=1), "exactly"),
    (lambda p: p.pop("revoked"), "exactly"),
    (lambda p: p.update(format="deltaport.key-list/2"), "format"),
    (lambda p: p["keys"][0].update(roles=["root"]), "unknown role"),
    (lambda p: p["keys"][0].update(roles=[]), "roles"),
    (lambda p: p["keys"][0].update(roles=["bundle", "bundle"]), "twice"),
    (lambda p: p["keys"][0].update(key_id="ed25519:" + "0" * 32), "does not name"),
    (lambda p: p["keys"][0].update(public_key="AAAA"), "32-byte"),
    (lambda p: p["keys"][0].update(not_after=p["keys"][0]["not_before"] - 1), "not_after"),
    (lambda p: p.update(keys=[p["keys"][0], p["keys"][0]]), "twice"),
    (lambda p: p.update(revoked=[p["keys"][0]["key_id"]]), "both certifies and revokes"),
    (lambda p: p.update(revoked=["nope"]), "key ids"),
])
def test_a_malformed_payload_is_refused_even_when_root_signed(edit: Any, message: str) -> None:
    payload = _payload(encode_envelope(_list(), [ROOT]))
    edit(payload)
    with pytest.raises(FormatError, match=message):
        parse_envelope(_resign(payload), [ROOT.public_key()])


def test_the_writer_refuses_what_the_reader_would() -> None:
    bad = CertifiedKey(KEYS[0].public_key(), frozenset({Role.BUNDLE}), NOW, NOW - 1)
    with pytest.raises(FormatError):
        encode_envelope(_list(keys=(bad,)), [ROOT])


def test_an_oversized_file_is_refused_before_parsing() -> None:
    with pytest.raises(FormatError, match=str(KEY_LIST_MAX_BYTES)):
        loads_envelope(b" " * (KEY_LIST_MAX_BYTES + 1))


def test_every_flipped_byte_is_refused_with_a_deltaport_error() -> None:
    data = dumps_envelope(encode_envelope(_list(), [ROOT]))
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        try:
            read = parse_envelope(loads_envelope(bytes(flipped)), [ROOT.public_key()])
        except DeltaportError:
            continue
        # a flip JSON ignores (whitespace: space <-> '!' is not; '\n' <-> '\x0b' is not)
        assert read.version == 1, i
