"""The signature document of a bundle head: encoding, strict parsing and Ed25519 checks.

Pure: bytes and key objects in, a verdict out. A bundle is accepted by a reader with
trusted keys when one entry names a trusted key id and its signature over
``SIGNING_CONTEXT + stored index bytes`` verifies. Entries by keys the reader does not
trust are ignored; a bad signature by a trusted key is refused outright.

The trusted keys are either a fixed list (*pinned keys*) or a :class:`Keyring`, which
picks them from the root-signed key list the bundle carries in its signature document
(format 4, docs/trust.md) and the one the device already holds.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from deltaport.bundle.format import (
    KEY_ID_RE,
    KEY_LIST_FIELD,
    SIGNATURE_FIELDS,
    SIGNING_CONTEXT,
    BundleLimits,
)
from deltaport.bundle.index import loads_strict
from deltaport.bundle.keys import key_id
from deltaport.errors import FormatError, SignatureError

ED25519_SIGNATURE_SIZE = 64


@dataclass(frozen=True)
class SignatureEntry:
    """One signature of the index: the signer's key id and the raw 64-byte signature."""

    key_id: str
    signature: bytes


@dataclass(frozen=True)
class Signer:
    """A bundle signing key and the root-signed key list that certifies it.

    The writer embeds ``key_list`` (the envelope object, docs/trust.md) in the
    signature document, so a device provisioned with the root key alone learns the key.
    """

    private_key: Ed25519PrivateKey
    key_list: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ResolvedKeys:
    """The keys a :class:`Keyring` trusts for one document, and why others are not."""

    keys: tuple[Ed25519PublicKey, ...]
    explain: Callable[[str], str]  # key id -> why it is not trusted (for messages)
    certified: frozenset[str] = frozenset()  # ids of ``keys`` a key list vouches for
    domain: str | None = None  # names what certified keys sign for (release counters)


@runtime_checkable
class Keyring(Protocol):
    """Decides which keys may sign, given the key list a document carries (or None).

    Raises (from ``resolve``): SignatureError when the carried key list is forged or
    contradicts the held one.
    """

    def resolve(self, key_list: Mapping[str, Any] | None) -> ResolvedKeys: ...


TrustedKeys = Sequence[Ed25519PublicKey] | Keyring
"""What a reader is told to trust: pinned public keys, or a keyring."""


@dataclass(frozen=True)
class SignatureDocument:
    """A parsed signature document: the entries and the embedded key list (format 4)."""

    entries: tuple[SignatureEntry, ...]
    key_list: Mapping[str, Any] | None = None  # the key list envelope, not yet verified


def signing_input(index_bytes: bytes) -> bytes:
    """The exact bytes an Ed25519 bundle signature covers."""
    return SIGNING_CONTEXT + index_bytes


def sign_index(index_bytes: bytes, private_key: Ed25519PrivateKey | Signer) -> SignatureEntry:
    """Sign the stored index bytes with ``private_key``."""
    if isinstance(private_key, Signer):
        private_key = private_key.private_key
    signature = private_key.sign(signing_input(index_bytes))
    return SignatureEntry(key_id(private_key.public_key()), signature)


def encode_signatures(
    entries: Sequence[SignatureEntry], key_list: Mapping[str, Any] | None = None
) -> bytes:
    """Canonical signature document bytes; an unsigned bundle has an empty list.

    ``key_list`` (a key list envelope) is embedded as is; only format 4 allows it.
    """
    document: dict[str, Any] = {
        "signatures": [
            {"key_id": e.key_id, "signature": base64.b64encode(e.signature).decode("ascii")}
            for e in entries
        ]
    }
    if key_list is not None:
        document[KEY_LIST_FIELD] = dict(key_list)
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii")


def _parse_entry(obj: object) -> SignatureEntry:
    if not isinstance(obj, dict) or obj.keys() != SIGNATURE_FIELDS:
        raise SignatureError("bundle signature entry must have exactly key_id and signature")
    kid, text = obj["key_id"], obj["signature"]
    if not isinstance(kid, str) or not KEY_ID_RE.fullmatch(kid):
        raise SignatureError("bundle signature document entry has an invalid key_id")
    if not isinstance(text, str):
        raise SignatureError(f"bundle signature by {kid} is not a string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"bundle signature by {kid} is not base64") from exc
    if len(raw) != ED25519_SIGNATURE_SIZE or base64.b64encode(raw).decode() != text:
        raise SignatureError(f"bundle signature by {kid} is not a canonical Ed25519 signature")
    return SignatureEntry(kid, raw)


def parse_signature_document(data: bytes, limits: BundleLimits) -> SignatureDocument:
    """Parse signature document bytes (already bounded by ``limits.max_signature_size``).

    The embedded key list is returned as the JSON object it is, unverified (its root
    signature is the keyring's business).

    Raises:
        SignatureError: the document is malformed or holds too many entries.
    """
    try:
        document = loads_strict(data, "signature document")
    except FormatError as exc:
        raise SignatureError(str(exc)) from exc
    if not isinstance(document, dict) or not {"signatures"} <= document.keys() <= {
        "signatures", KEY_LIST_FIELD
    }:
        raise SignatureError(
            f"bundle signature document must be an object with 'signatures' "
            f"(and optionally '{KEY_LIST_FIELD}') only"
        )
    entries = document["signatures"]
    if not isinstance(entries, list) or len(entries) > limits.max_signatures:
        raise SignatureError(
            f"bundle signature document must list at most {limits.max_signatures} signatures"
        )
    key_list = document.get(KEY_LIST_FIELD)
    if key_list is not None and not isinstance(key_list, dict):
        raise SignatureError(f"bundle signature document: {KEY_LIST_FIELD} must be an object")
    return SignatureDocument(tuple(_parse_entry(obj) for obj in entries), key_list)


def parse_signatures(data: bytes, limits: BundleLimits) -> tuple[SignatureEntry, ...]:
    """The entries of a signature document (see :func:`parse_signature_document`).

    Raises:
        SignatureError: the document is malformed or holds too many entries.
    """
    return parse_signature_document(data, limits).entries


def resolve_keys(trusted: TrustedKeys, key_list: Mapping[str, Any] | None) -> ResolvedKeys:
    """The keys to check against: pinned ones as they are, or a keyring's choice.

    Raises:
        SignatureError: the keyring refused the carried key list.
    """
    if isinstance(trusted, Keyring):
        return trusted.resolve(key_list)
    keys = tuple(trusted)
    trusted_ids = ", ".join(key_id(k) for k in keys) or "none"
    return ResolvedKeys(keys, lambda kid: f"{kid} is not a trusted key (trusted: {trusted_ids})")


def check_signatures(
    index_bytes: bytes,
    entries: Sequence[SignatureEntry],
    trusted_keys: Sequence[Ed25519PublicKey],
    *,
    require_signature: bool,
    explain: Callable[[str], str] | None = None,
) -> str | None:
    """The id of the trusted key that signed ``index_bytes``, or None if unsigned by one.

    Raises:
        SignatureError: a trusted key's signature does not verify, or
            ``require_signature`` and no entry is by a trusted key.
    """
    trusted = {key_id(k): k for k in trusted_keys}
    message = signing_input(index_bytes)
    for entry in entries:
        key = trusted.get(entry.key_id)
        if key is None:
            continue
        try:
            key.verify(entry.signature, message)
        except InvalidSignature as exc:
            raise SignatureError(
                f"bundle signature by {entry.key_id} does not verify: "
                "the index or its signature was altered"
            ) from exc
        return entry.key_id
    if not require_signature:
        return None
    if not entries:
        raise SignatureError("bundle is unsigned, but a signature by a trusted key is required")
    signers = ", ".join(e.key_id for e in entries)
    if explain is not None:
        reasons = "; ".join(explain(e.key_id) for e in entries)
        raise SignatureError(f"bundle is signed by {signers}, none of which is trusted: {reasons}")
    raise SignatureError(
        f"bundle is signed by {signers}, none of which is trusted "
        f"(trusted: {', '.join(trusted) or 'none'})"
    )
