"""The signature document of a bundle head: encoding, strict parsing and Ed25519 checks.

Pure: bytes and key objects in, a verdict out. A bundle is accepted by a reader with
trusted keys when one entry names a trusted key id and its signature over
``SIGNING_CONTEXT + stored index bytes`` verifies. Entries by keys the reader does not
trust are ignored; a bad signature by a trusted key is refused outright.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from deltaport.bundle.format import KEY_ID_RE, SIGNATURE_FIELDS, SIGNING_CONTEXT, BundleLimits
from deltaport.bundle.index import loads_strict
from deltaport.bundle.keys import key_id
from deltaport.errors import FormatError, SignatureError

ED25519_SIGNATURE_SIZE = 64


@dataclass(frozen=True)
class SignatureEntry:
    """One signature of the index: the signer's key id and the raw 64-byte signature."""

    key_id: str
    signature: bytes


def signing_input(index_bytes: bytes) -> bytes:
    """The exact bytes an Ed25519 bundle signature covers."""
    return SIGNING_CONTEXT + index_bytes


def sign_index(index_bytes: bytes, private_key: Ed25519PrivateKey) -> SignatureEntry:
    """Sign the stored index bytes with ``private_key``."""
    signature = private_key.sign(signing_input(index_bytes))
    return SignatureEntry(key_id(private_key.public_key()), signature)


def encode_signatures(entries: Sequence[SignatureEntry]) -> bytes:
    """Canonical signature document bytes; an unsigned bundle has an empty list."""
    document = {
        "signatures": [
            {"key_id": e.key_id, "signature": base64.b64encode(e.signature).decode("ascii")}
            for e in entries
        ]
    }
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


def parse_signatures(data: bytes, limits: BundleLimits) -> tuple[SignatureEntry, ...]:
    """Parse signature document bytes (already bounded by ``limits.max_signature_size``).

    Raises:
        SignatureError: the document is malformed or holds too many entries.
    """
    try:
        document = loads_strict(data, "signature document")
    except FormatError as exc:
        raise SignatureError(str(exc)) from exc
    if not isinstance(document, dict) or document.keys() != {"signatures"}:
        raise SignatureError("bundle signature document must be an object with only 'signatures'")
    entries = document["signatures"]
    if not isinstance(entries, list) or len(entries) > limits.max_signatures:
        raise SignatureError(
            f"bundle signature document must list at most {limits.max_signatures} signatures"
        )
    return tuple(_parse_entry(obj) for obj in entries)


def check_signatures(
    index_bytes: bytes,
    entries: Sequence[SignatureEntry],
    trusted_keys: Sequence[Ed25519PublicKey],
    *,
    require_signature: bool,
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
    raise SignatureError(
        f"bundle is signed by {signers}, none of which is trusted "
        f"(trusted: {', '.join(trusted) or 'none'})"
    )
