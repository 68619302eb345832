"""Ed25519 keys that sign bundles: generate, load, and name them by key id.

The private key file is PKCS#8 PEM (unencrypted, mode 0600), the public key file
SubjectPublicKeyInfo PEM. Both are written atomically (temp file in the same folder,
then a hard link, which fails if the name exists): an existing key is never replaced,
even by a concurrent run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from deltaport.errors import FormatError, StorageError, UsageError
from deltaport.fsutil import fsync_dir

KEY_PAIR_NAME = "deltaport"  # the bundle-signing pair
PRIVATE_KEY_NAME = f"{KEY_PAIR_NAME}.key"
PUBLIC_KEY_NAME = f"{KEY_PAIR_NAME}.pub"
KEY_PAIR_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_KEY_FILE_SIZE = 16 << 10
"""A PEM Ed25519 key is about 120 bytes; anything much larger is not one."""

KEY_ID_PREFIX = "ed25519:"
KEY_ID_BYTES = 16


@dataclass(frozen=True)
class KeyPair:
    """Where a generated key pair was written, and the id of its public key."""

    private_key_path: Path
    public_key_path: Path
    key_id: str


def key_id(public_key: Ed25519PublicKey) -> str:
    """``ed25519:`` + hex of the first 16 bytes of sha256(raw 32-byte public key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_ID_PREFIX + hashlib.sha256(raw).digest()[:KEY_ID_BYTES].hex()


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file ``path`` atomically; never replaces an existing file.

    Raises:
        UsageError: ``path`` already exists.
        StorageError: the folder is not writable.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise StorageError(f"cannot write in {path.parent}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError as exc:
        raise UsageError(f"{path} already exists; refusing to overwrite a key") from exc
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def generate_keypair(directory: Path, name: str = KEY_PAIR_NAME) -> KeyPair:
    """Create ``directory`` (mode 0700) if needed and write a new Ed25519 key pair in it.

    The files are ``NAME.key`` and ``NAME.pub``: ``deltaport`` signs bundles,
    ``manifest`` the hub's desired manifests (docs/device-runtime.md §1).

    Raises:
        UsageError: NAME is not a plain file name, or ``NAME.key`` / ``NAME.pub``
            already exists there.
        StorageError: the folder cannot be created or written.
    """
    if not KEY_PAIR_NAME_RE.fullmatch(name):
        raise UsageError(f"key name {name!r} must be letters, digits, '.', '_' or '-'")
    directory = Path(directory)
    private_path = directory / f"{name}.key"
    public_path = directory / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise UsageError(f"{path} already exists; refusing to overwrite a key")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {directory}: {exc.strerror}") from exc
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new_file(private_path, private_pem, 0o600)
    try:
        _write_new_file(public_path, public_pem, 0o644)
    except BaseException:
        private_path.unlink()  # the one we just created: leave no half pair behind
        raise
    fsync_dir(directory)
    return KeyPair(private_path, public_path, key_id(private_key.public_key()))


def _read_key_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_SIZE + 1)
    except OSError as exc:
        raise StorageError(f"cannot read key file {path}: {exc.strerror}") from exc
    if len(data) > MAX_KEY_FILE_SIZE:
        raise FormatError(f"{path} is larger than {MAX_KEY_FILE_SIZE} bytes: not a key file")
    return data


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an unencrypted PEM (PKCS#8) Ed25519 private key.

    Raises:
        StorageError: the file cannot be read.
        FormatError: not an unencrypted Ed25519 private key in PEM.
    """
    data = _read_key_file(Path(path))
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise FormatError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise FormatError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load a PEM (SubjectPublicKeyInfo) Ed25519 public key.

    Raises:
        StorageError: the file cannot be read.
        FormatError: not an Ed25519 public key in PEM.
    """
    data = _read_key_file(Path(path))
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise FormatError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise FormatError(f"{path} is not an Ed25519 public key")
    return key
