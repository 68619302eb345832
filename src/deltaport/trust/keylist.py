"""The key list: the root-signed document that certifies the online signing keys.

Pure: values and keys in, bytes out; bytes (or the parsed envelope) and root keys in,
a checked :class:`KeyList` out. The envelope (docs/trust.md, section 2)::

    {"format": "deltaport.key-list/1",
     "payload": "<base64 of the canonical payload JSON>",
     "signatures": [{"key_id": "ed25519:…", "signature": "<base64>"}]}

A root signature covers ``SIGNING_CONTEXT + payload bytes`` (the decoded base64), so
the payload is checked exactly as signed, and the envelope can ride inside other JSON
documents (a bundle's signature document, a desired-manifest envelope) unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from deltaport.bundle.envelope import b64_field, verify_signatures
from deltaport.bundle.format import KEY_ID_RE
from deltaport.bundle.index import loads_strict
from deltaport.bundle.keys import key_id
from deltaport.errors import FormatError, SignatureError

FORMAT = "deltaport.key-list/1"
SIGNING_CONTEXT = b"deltaport-key-list\x00"
"""Prefixed to the payload bytes: a root signature is never valid as anything else."""

KEY_LIST_MAX_BYTES = 48 * 1024  # a whole envelope file (fits a bundle's 64 KiB signature document)
MAX_KEYS = 32  # certified keys in one list
MAX_REVOKED = 256  # revoked key ids kept in one list
MAX_SIGNATURES = 8  # root signatures on one list
MAX_VERSION = (1 << 53) - 1  # exact in every JSON parser
MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z, Unix seconds
ED25519_SIGNATURE_SIZE = 64
ED25519_PUBLIC_KEY_SIZE = 32

ENVELOPE_FIELDS = frozenset({"format", "payload", "signatures"})
PAYLOAD_FIELDS = frozenset({"format", "version", "issued_at", "expires_at", "keys", "revoked"})
KEY_FIELDS = frozenset({"key_id", "public_key", "roles", "not_before", "not_after"})


class Role(StrEnum):
    """What a certified key may sign."""

    BUNDLE = "bundle"  # bundles (their index)
    MANIFEST = "manifest"  # desired manifests


@dataclass(frozen=True)
class CertifiedKey:
    """One online key, what it may sign, and when (Unix seconds, both inclusive)."""

    public_key: Ed25519PublicKey
    roles: frozenset[Role]
    not_before: int
    not_after: int

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)


@dataclass(frozen=True)
class KeyList:
    """A key list's content: VERSION only goes up; after EXPIRES_AT it certifies nothing."""

    version: int
    issued_at: int
    expires_at: int
    keys: tuple[CertifiedKey, ...]
    revoked: frozenset[str] = frozenset()  # key ids withdrawn for good
    signer: str | None = None  # the root key id whose signature verified (set by parse)
    payload_digest: str = ""  # sha256 of the signed payload (set by parse): same version, same list

    def key(self, kid: str) -> CertifiedKey | None:
        """The certification of key id KID in this list, or None."""
        return next((k for k in self.keys if k.key_id == kid), None)


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def payload_bytes(key_list: KeyList) -> bytes:
    """The canonical payload JSON of KEY_LIST (sorted keys, no spaces, ASCII)."""
    doc = {
        "format": FORMAT,
        "version": key_list.version,
        "issued_at": key_list.issued_at,
        "expires_at": key_list.expires_at,
        "keys": [
            {
                "key_id": k.key_id,
                "public_key": base64.b64encode(_raw(k.public_key)).decode("ascii"),
                "roles": sorted(r.value for r in k.roles),
                "not_before": k.not_before,
                "not_after": k.not_after,
            }
            for k in sorted(key_list.keys, key=lambda k: k.key_id)
        ],
        "revoked": sorted(key_list.revoked),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")


def encode_envelope(key_list: KeyList, root_keys: Sequence[Ed25519PrivateKey]) -> dict[str, Any]:
    """The signed envelope of KEY_LIST as a JSON object, one signature per root key.

    Raises:
        FormatError: the list does not satisfy its own rules (checked as a reader would).
    """
    payload = payload_bytes(key_list)
    envelope = {
        "format": FORMAT,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [
            {
                "key_id": key_id(k.public_key()),
                "signature": base64.b64encode(k.sign(SIGNING_CONTEXT + payload)).decode("ascii"),
            }
            for k in root_keys
        ],
    }
    _parse_payload(payload)  # the writer's output must satisfy the reader
    if len(dumps_envelope(envelope)) > KEY_LIST_MAX_BYTES:
        raise FormatError(f"key list would be larger than {KEY_LIST_MAX_BYTES} bytes")
    return envelope


def dumps_envelope(envelope: Mapping[str, Any]) -> bytes:
    """The envelope as a file's bytes (sorted keys, one space indent, ASCII)."""
    return json.dumps(envelope, sort_keys=True, indent=1).encode("ascii") + b"\n"


def loads_envelope(data: bytes) -> Any:
    """The envelope object of a key list file, bounded by KEY_LIST_MAX_BYTES.

    Raises:
        FormatError: too large or not strict JSON.
    """
    if len(data) > KEY_LIST_MAX_BYTES:
        raise FormatError(f"key list is larger than {KEY_LIST_MAX_BYTES} bytes")
    return loads_strict(data, "key list")


def parse_envelope(envelope: Any, root_keys: Sequence[Ed25519PublicKey]) -> KeyList:
    """Check ENVELOPE (a parsed JSON object): a signature by a root key, a valid payload.

    Raises:
        FormatError: not a key list envelope, or a malformed payload.
        SignatureError: not signed by any of ROOT_KEYS, or a root signature that does
            not verify (the list was altered).
    """
    payload = _payload_of(envelope)
    signer = _check_root_signature(payload, envelope["signatures"], root_keys)
    parsed = _parse_payload(payload)
    return _with(parsed, signer=signer, payload=payload)


def read_unverified(envelope: Any) -> KeyList:
    """The payload of ENVELOPE without checking who signed it: for the hub and the CLI,
    which hold no root public key necessarily and only inspect their own list.

    Raises:
        FormatError: not a key list envelope, or a malformed payload.
    """
    payload = _payload_of(envelope)
    return _with(_parse_payload(payload), signer=None, payload=payload)


def _with(parsed: KeyList, *, signer: str | None, payload: bytes) -> KeyList:
    return KeyList(parsed.version, parsed.issued_at, parsed.expires_at, parsed.keys,
                   parsed.revoked, signer, "sha256:" + hashlib.sha256(payload).hexdigest())


def _payload_of(envelope: Any) -> bytes:
    _exact(envelope, ENVELOPE_FIELDS, "envelope")
    if envelope["format"] != FORMAT:
        raise FormatError(f"key list format {str(envelope['format'])[:40]!r} is not {FORMAT!r}")
    payload = _b64(envelope["payload"], "payload")
    if len(payload) > KEY_LIST_MAX_BYTES:
        raise FormatError(f"key list payload is larger than {KEY_LIST_MAX_BYTES} bytes")
    return payload


def _check_root_signature(payload: bytes, entries: Any,
                          root_keys: Sequence[Ed25519PublicKey]) -> str:
    found = verify_signatures(payload, entries, root_keys, context=SIGNING_CONTEXT,
                              what="key list", max_signatures=MAX_SIGNATURES)
    if found.signer is not None:
        return found.signer
    roots = ", ".join(key_id(k) for k in root_keys) or "none"
    raise SignatureError(
        f"key list is signed by {', '.join(found.signers) or 'no key'}, which is not a "
        f"trusted root key (root keys: {roots})"
    )


def _exact(obj: Any, fields: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.keys() != fields:
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise FormatError(f"key list {what} must have exactly {sorted(fields)}, got {got}")
    return obj


def _b64(value: Any, what: str) -> bytes:
    return b64_field(value, f"key list {what}")


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FormatError(f"key list {what} must be an integer in [{low}, {high}]")
    return int(value)


def _public_key(value: Any, what: str) -> Ed25519PublicKey:
    raw = _b64(value, what)
    if len(raw) != ED25519_PUBLIC_KEY_SIZE:
        raise FormatError(f"key list {what} is not a 32-byte Ed25519 public key")
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise FormatError(f"key list {what} is not an Ed25519 public key") from exc


def _roles(value: Any, what: str) -> frozenset[Role]:
    if not isinstance(value, list) or not value or len(value) > len(Role):
        raise FormatError(f"key list {what} must list 1-{len(Role)} roles")
    try:
        roles = frozenset(Role(r) for r in value)
    except ValueError as exc:
        raise FormatError(f"key list {what} names an unknown role "
                          f"(known: {', '.join(Role)})") from exc
    if len(roles) != len(value):
        raise FormatError(f"key list {what} names a role twice")
    return roles


def _parse_key(obj: Any, i: int) -> CertifiedKey:
    where = f"keys[{i}]"
    entry = _exact(obj, KEY_FIELDS, where)
    public = _public_key(entry["public_key"], f"{where}.public_key")
    if entry["key_id"] != key_id(public):
        raise FormatError(f"key list {where}.key_id does not name its public key")
    not_before = _int(entry["not_before"], f"{where}.not_before", 0, MAX_TIME)
    not_after = _int(entry["not_after"], f"{where}.not_after", not_before, MAX_TIME)
    return CertifiedKey(public, _roles(entry["roles"], f"{where}.roles"), not_before, not_after)


def _parse_revoked(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or len(value) > MAX_REVOKED:
        raise FormatError(f"key list revoked must be a list of at most {MAX_REVOKED} key ids")
    if not all(isinstance(k, str) and KEY_ID_RE.fullmatch(k) for k in value):
        raise FormatError("key list revoked must hold key ids (ed25519:<32 hex>)")
    return frozenset(value)


def _parse_payload(payload: bytes) -> KeyList:
    doc = _exact(loads_strict(payload, "key list payload"), PAYLOAD_FIELDS, "payload")
    if doc["format"] != FORMAT:
        raise FormatError(f"key list payload format is not {FORMAT!r}")
    keys = doc["keys"]
    if not isinstance(keys, list) or len(keys) > MAX_KEYS:
        raise FormatError(f"key list keys must be a list of at most {MAX_KEYS} keys")
    parsed = tuple(_parse_key(k, i) for i, k in enumerate(keys))
    ids = [k.key_id for k in parsed]
    if len(set(ids)) != len(ids):
        raise FormatError("key list certifies one key twice")
    revoked = _parse_revoked(doc["revoked"])
    if revoked & set(ids):
        raise FormatError("key list both certifies and revokes "
                          f"{', '.join(sorted(revoked & set(ids)))}")
    return KeyList(
        version=_int(doc["version"], "version", 1, MAX_VERSION),
        issued_at=_int(doc["issued_at"], "issued_at", 0, MAX_TIME),
        expires_at=_int(doc["expires_at"], "expires_at", 0, MAX_TIME),
        keys=parsed,
        revoked=revoked,
    )
