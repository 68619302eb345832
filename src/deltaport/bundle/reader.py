"""Reading a bundle file: the head is checked on open, members stream with their digests.

All judgement is delegated to the pure functions of ``head`` and ``payload``; this
module only reads bytes (with ``os.pread``, so several member streams can be open at
once) and maps operating-system errors to :class:`StorageError`.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, cast

from deltaport.bundle.format import BundleLimits
from deltaport.bundle.head import read_head, required_head_bytes
from deltaport.bundle.index import BundleIndex, MemberInfo
from deltaport.bundle.payload import PayloadVerifier
from deltaport.bundle.signing import TrustedKeys
from deltaport.errors import FormatError, IntegrityError, StorageError, TruncatedError

HEAD_PROBE_SIZE = 64 << 10
"""First read of a bundle: enough for the whole head of small bundles."""

MEMBER_BUFFER_SIZE = 256 << 10


def _pread(fd: int, size: int, offset: int, path: Path) -> bytes:
    try:
        return os.pread(fd, size, offset)
    except OSError as exc:
        raise StorageError(f"cannot read bundle {path}: {exc.strerror}") from exc


class _MemberStream(io.RawIOBase):
    """Raw reader over one member's bytes; checks the member digest at its last byte."""

    def __init__(self, fd: int, start: int, member: MemberInfo, path: Path) -> None:
        super().__init__()
        self._fd = fd
        self._start = start
        self._member = member
        self._path = path
        self._done = 0
        self._hash = hashlib.sha256()
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._member.size - self._done)
        if want <= 0:
            self._check()
            return 0
        data = _pread(self._fd, want, self._start + self._done, self._path)
        if not data:
            raise TruncatedError(
                f"bundle {self._path} ends inside member {self._member.name!r} "
                f"({self._done} of {self._member.size} bytes)"
            )
        memoryview(buffer)[: len(data)] = data
        self._hash.update(data)
        self._done += len(data)
        if self._done == self._member.size:
            self._check()
        return len(data)

    def _check(self) -> None:
        if self._checked:
            return
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self._member.digest:
            raise IntegrityError(
                f"bundle member {self._member.name!r} does not match its digest "
                f"(expected {self._member.digest}, got {actual})"
            )
        self._checked = True


class BundleReader:
    """An open bundle whose head (format version, signature, index) has been checked.

    With ``trusted_keys``, an unsigned or wrongly signed bundle is refused here, before
    any member is read; ``require_signature`` defaults to True exactly when keys are
    given. The file's size must equal the size the index declares.

    Raises (from the constructor):
        StorageError: the file cannot be opened or read.
        TruncatedError: the file is shorter than its head or its declared size.
        SignatureError, UnsupportedVersionError, FormatError: see :func:`read_head`.
    """

    def __init__(
        self,
        path: Path,
        *,
        trusted_keys: TrustedKeys | None = None,
        require_signature: bool | None = None,
        limits: BundleLimits = BundleLimits(),
    ) -> None:
        self.path = Path(path)
        self._limits = limits
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise StorageError(f"cannot open bundle {self.path}: {exc.strerror}") from exc
        try:
            self._file_size = os.fstat(self._fd).st_size
            head = self._read_head_bytes()
            index, self.signature_bytes, _ = read_head(
                head, trusted_keys=trusted_keys, require_signature=require_signature, limits=limits
            )
            self.index: BundleIndex = index
            self._check_file_size()
        except BaseException:
            os.close(self._fd)
            raise

    def _read_head_bytes(self) -> bytes:
        """The head's bytes, read in at most a few bounded steps (or what the file has)."""
        data = _pread(self._fd, HEAD_PROBE_SIZE, 0, self.path)
        while True:
            needed = required_head_bytes(data, self._limits)
            if needed <= len(data) or len(data) >= self._file_size:
                return data
            data = _pread(self._fd, needed, 0, self.path)

    def _check_file_size(self) -> None:
        expected = self.index.bundle_size
        if self._file_size < expected:
            raise TruncatedError(
                f"bundle {self.path} is truncated: {self._file_size} bytes of {expected}"
            )
        if self._file_size > expected:
            raise FormatError(
                f"bundle {self.path} has {self._file_size - expected} bytes after its end"
            )

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file; member streams still open become unusable."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @contextmanager
    def open_member(self, name: str) -> Iterator[BinaryIO]:
        """Stream member ``name``; reading its last byte checks its digest.

        A caller that stops early gets no digest check (call :meth:`verify_all` first
        if the whole bundle must be known good before use).

        Raises:
            FormatError: no member of that name.
            IntegrityError: (while reading) the member does not match its digest.
            TruncatedError: (while reading) the file ends inside the member.
        """
        member = self.index.member(name)
        raw = _MemberStream(self._fd, self.index.payload_offset + member.offset, member, self.path)
        stream = io.BufferedReader(raw, buffer_size=MEMBER_BUFFER_SIZE)
        try:
            yield cast(BinaryIO, stream)
        finally:
            stream.close()

    def verify_all(self) -> None:
        """Check every chunk digest and every member digest, in one pass.

        Raises:
            TruncatedError: the file is shorter than the index says.
            IntegrityError: a chunk or member does not match (the message names it).
        """
        verifier = PayloadVerifier(self.index)
        for chunk_no in range(self.index.chunk_count):
            start, end = self.index.chunk_range(chunk_no)
            data = _pread(self._fd, end - start, start, self.path)
            if len(data) < end - start:
                raise TruncatedError(
                    f"bundle {self.path} is truncated: chunk {chunk_no} ends at byte "
                    f"{start + len(data)} instead of {end}"
                )
            verifier.feed(data)
        verifier.finish()
