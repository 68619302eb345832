"""The bundle store interface: a flat namespace of keys, written whole and atomically.

Keys are relative, slash-separated names (``bundles/<key>.dpb``,
``devices/<name>/desired.json``). A folder store maps them to files under its root
(the outbox a third-party transfer tool syncs); an S3-compatible store maps them to
object keys under a bucket prefix. Readers never see a partly written object.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO, Protocol

from deltaport.errors import UsageError

KEY_MAX_CHARS = 512
_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=-]*$")


class BundleStore(Protocol):
    """Somewhere bundles and per-device documents are published for devices to fetch."""

    def put_file(self, key: str, path: Path) -> str:
        """Publish the file at PATH under KEY (replacing any old object); return its location."""
        ...

    def put_bytes(self, key: str, data: bytes) -> str:
        """Publish DATA under KEY (replacing any old object); return its location."""
        ...

    def exists(self, key: str) -> bool:
        """True if an object is published under KEY."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Read the object under KEY. Raises StorageError if it is missing."""
        ...

    def location(self, key: str) -> str:
        """Where KEY lives, as a URI a device or operator can use (file://, s3://)."""
        ...

    def delete(self, key: str) -> None:
        """Remove KEY; missing keys are not an error."""
        ...


def check_key(key: str) -> str:
    """KEY if it is a safe relative name (no '..', no absolute path, sane characters).

    Raises:
        UsageError: the key could escape the store or is unreasonable.
    """
    parts = key.split("/")
    if len(key) > KEY_MAX_CHARS or not all(_KEY_PART.match(p) for p in parts):
        raise UsageError(f"invalid store key {key[:80]!r}")
    return key
