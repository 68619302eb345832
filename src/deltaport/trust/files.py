"""Key list files: reading (bounded) and writing (atomically). The package's only I/O."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deltaport.bundle.keys import key_id, load_private_key
from deltaport.bundle.signing import Signer
from deltaport.errors import StorageError, UsageError
from deltaport.fsutil import write_atomic
from deltaport.trust.keylist import (
    KEY_LIST_MAX_BYTES,
    Role,
    dumps_envelope,
    loads_envelope,
    read_unverified,
)
from deltaport.trust.policy import usable_keys, why_untrusted

KEY_LIST_FILE_NAME = "keylist.json"
"""The hub's current key list, beside its signing keys (``DATA_DIR/keys/keylist.json``)."""


def read_envelope(path: Path) -> Any:
    """The key list envelope object in PATH (not yet verified).

    Raises:
        StorageError: the file cannot be read.
        FormatError: too large or not strict JSON.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(KEY_LIST_MAX_BYTES + 1)
    except OSError as exc:
        raise StorageError(f"cannot read key list {path}: {exc.strerror}") from exc
    return loads_envelope(data)


def write_envelope(path: Path, envelope: Mapping[str, Any]) -> None:
    """Write ENVELOPE to PATH atomically (a reader never sees half a key list).

    Raises:
        StorageError: the folder is not writable.
    """
    write_atomic(path, dumps_envelope(envelope), mode=0o644)


def load_signer(private_key_path: Path, role: Role = Role.BUNDLE,
                now: float | None = None) -> Ed25519PrivateKey | Signer:
    """The signing key at PRIVATE_KEY_PATH, with the key list beside it when there is one.

    With ``keylist.json`` in the key's folder the result is a :class:`Signer` that
    embeds the list; the list must certify this key for ROLE now, else every device
    provisioned with the root key would refuse what the hub signs.

    Raises:
        StorageError, FormatError: a file cannot be read or is malformed.
        UsageError: the key list does not certify the key for ROLE now.
    """
    key = load_private_key(private_key_path)
    list_path = Path(private_key_path).parent / KEY_LIST_FILE_NAME
    if not list_path.exists():
        return key
    envelope = read_envelope(list_path)
    key_list = read_unverified(envelope)
    moment = time.time() if now is None else now
    public = key.public_key()
    if key_id(public) not in {key_id(k) for k in usable_keys(key_list, role, moment, skew=0)}:
        reason = why_untrusted(key_list, key_id(public), role, moment, skew=0)
        raise UsageError(f"{list_path} does not certify the signing key {private_key_path}: "
                         f"{reason} (deltaport keys certify makes a new list)")
    return Signer(key, envelope)
