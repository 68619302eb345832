"""Digests: parsing, hashing bytes, and verifying streams while they are read or written.

A blob is never trusted whole: readers hash as the bytes pass and check the digest and
size at end of stream, raising IntegrityError (content differs) or TruncatedError
(content ends early) naming the thing that was being read.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import BinaryIO, cast

from deltaport.errors import FormatError, IntegrityError, TruncatedError

_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
DRAIN_CHUNK = 1 << 16


def is_digest(text: str) -> bool:
    """Whether TEXT is a well-formed sha256/sha512 digest."""
    return bool(_DIGEST_RE.match(text))


def check_digest(text: object, what: str) -> str:
    """TEXT if it is a well-formed digest.

    Raises:
        FormatError: TEXT is not a digest; the message names WHAT.
    """
    if not isinstance(text, str) or not is_digest(text):
        raise FormatError(f"{what}: not a valid digest: {text!r}")
    return text


def digest_hex(digest: str) -> str:
    """The hex part of "algo:hex"."""
    return digest.split(":", 1)[1]


def new_hasher(digest: str = "sha256:") -> hashlib._Hash:
    """A hashlib object for the algorithm of DIGEST."""
    algorithm = digest.split(":", 1)[0]
    if algorithm not in ("sha256", "sha512"):
        raise FormatError(f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)


def sha256_digest(data: bytes) -> str:
    """The "sha256:..." digest of DATA."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def verify_bytes(data: bytes, digest: str, what: str) -> bytes:
    """DATA if it hashes to DIGEST, else IntegrityError naming WHAT."""
    hasher = new_hasher(digest)
    hasher.update(data)
    actual = f"{digest.split(':', 1)[0]}:{hasher.hexdigest()}"
    if actual != digest:
        raise IntegrityError(f"{what}: content has digest {actual}, expected {digest}")
    return data


class VerifyingReader(io.RawIOBase):
    """Reads INNER, hashing; at EOF checks DIGEST and SIZE (None: any size).

    Reading past SIZE is refused at once (untrusted input has a named limit: its
    declared size). ``finish()`` reads what is left and verifies, for callers that
    stop before EOF.
    """

    def __init__(self, inner: BinaryIO, digest: str, size: int | None, what: str) -> None:
        self._inner = inner
        self._digest = digest
        self._size = size
        self._what = what
        self._hasher = new_hasher(digest)
        self.count = 0
        self.verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.verified:
            return 0
        want = len(buffer)
        if self._size is not None:
            want = min(want, self._size - self.count + 1) or 1
        data = self._inner.read(want)
        if not data:
            self._verify()
            return 0
        self.count += len(data)
        if self._size is not None and self.count > self._size:
            raise IntegrityError(f"{self._what}: longer than its declared size {self._size}")
        self._hasher.update(data)
        n = len(data)
        buffer[:n] = data
        return n

    def _verify(self) -> None:
        if self._size is not None and self.count < self._size:
            raise TruncatedError(
                f"{self._what}: ends after {self.count} of {self._size} bytes"
            )
        algorithm = self._digest.split(":", 1)[0]
        actual = f"{algorithm}:{self._hasher.hexdigest()}"
        if actual != self._digest:
            raise IntegrityError(
                f"{self._what}: content has digest {actual}, expected {self._digest}"
            )
        self.verified = True

    def finish(self) -> None:
        """Read to EOF (discarding) and verify."""
        while not self.verified:
            buf = bytearray(DRAIN_CHUNK)
            self.readinto(memoryview(buf))


def verifying_reader(inner: BinaryIO, digest: str, size: int | None, what: str) -> BinaryIO:
    """A buffered VerifyingReader over INNER, typed as a binary file."""
    return cast(BinaryIO, io.BufferedReader(VerifyingReader(inner, digest, size, what), 1 << 16))


class HashingWriter:
    """Writes to OUT while hashing (sha256) and counting what passes."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._hasher = new_hasher()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._hasher.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hasher.hexdigest()
