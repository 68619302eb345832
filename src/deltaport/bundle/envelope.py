"""Signed JSON envelopes: ``{"payload": base64, "signatures": [{"key_id", "signature"}]}``.

Desired manifests (docs/device-runtime.md §1) and key lists (docs/trust.md) are both
sent this way: each signature covers ``CONTEXT + payload bytes``, the context naming
the kind of document so a signature of one kind never verifies as another. Pure:
bytes and keys in, the verifying key's id out.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from deltaport.bundle.format import KEY_ID_RE
from deltaport.bundle.keys import key_id
from deltaport.errors import FormatError, SignatureError

ED25519_SIGNATURE_SIZE = 64
SIGNATURE_FIELDS = frozenset({"key_id", "signature"})


@dataclass(frozen=True)
class Verified:
    """What checking an envelope's signatures found."""

    signer: str | None  # the id of the trusted key whose signature verifies; None: none
    signers: tuple[str, ...]  # every key id that signed, trusted or not (for messages)


def b64_field(value: Any, what: str) -> bytes:
    """VALUE decoded from base64; WHAT names it (``"desired manifest payload"``).

    Raises:
        FormatError: not a string, or not base64.
    """
    if not isinstance(value, str):
        raise FormatError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"{what} is not base64") from exc


def verify_signatures(payload: bytes, entries: Any, keys: Sequence[Ed25519PublicKey], *,
                      context: bytes, what: str, max_signatures: int) -> Verified:
    """Check ENTRIES (an envelope's ``signatures``) over CONTEXT + PAYLOAD with KEYS.

    The first signature by one of KEYS decides: it verifies, or the document was
    altered. Signatures by other keys are listed, not checked.

    Raises:
        SignatureError: malformed entries, too many, or a trusted key's signature that
            does not verify (WHAT names the document in the message).
    """
    if not isinstance(entries, list) or len(entries) > max_signatures:
        raise SignatureError(f"{what} must carry at most {max_signatures} signatures")
    trusted = {key_id(k): k for k in keys}
    signers = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.keys() != SIGNATURE_FIELDS:
            raise SignatureError(f"{what} signature must have exactly key_id and signature")
        kid = entry["key_id"]
        if not isinstance(kid, str) or not KEY_ID_RE.fullmatch(kid):
            raise SignatureError(f"{what} signature has an invalid key_id")
        signers.append(kid)
        key = trusted.get(kid)
        if key is None:
            continue
        raw = b64_field(entry["signature"], f"{what} signature by {kid}")
        if len(raw) != ED25519_SIGNATURE_SIZE:
            raise SignatureError(f"{what} signature by {kid} is not Ed25519")
        try:
            key.verify(raw, context + payload)
        except InvalidSignature as exc:
            raise SignatureError(
                f"{what} signature by {kid} does not verify: it was altered") from exc
        return Verified(kid, tuple(signers))
    return Verified(None, tuple(signers))
