"""Writing a bundle file: members streamed into a spool, then head + payload, atomically.

The index must come first in the file but depends on every member (digests, chunk
digests), so members are first streamed into an anonymous spool file in the target's
folder - already laid out as the payload region, its chunk digests computed on the
way - and :meth:`BundleWriter.finish` then writes head + spool to a temp file next to
the target and renames it into place. A failure at any point leaves no file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deltaport.bundle.format import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    BundleLimits,
    media_type_problem,
    member_name_problem,
)
from deltaport.bundle.head import encode_head, encode_index_bytes, read_head
from deltaport.bundle.index import MemberInfo, Release, encode_index
from deltaport.bundle.payload import ChunkHasher
from deltaport.bundle.signing import Signer, encode_signatures, sign_index
from deltaport.errors import FormatError, StorageError, TruncatedError, UsageError
from deltaport.fsutil import fsync_dir

COPY_BUFFER_SIZE = 1 << 20


@dataclass(frozen=True)
class BundleInfo:
    """What :meth:`BundleWriter.finish` wrote."""

    path: Path
    size: int
    digest: str  # "sha256:<hex>" of the whole file
    index_digest: str  # "sha256:<hex>" of the exact stored index bytes
    signer_key_id: str | None
    members: tuple[MemberInfo, ...]

    @property
    def sha256(self) -> str:
        """Hex sha256 of the whole file (``digest`` without its prefix)."""
        return self.digest.removeprefix("sha256:")


class BundleWriter:
    """Builds one bundle file at ``path``; use as a context manager.

    ``add_member`` streams each member (never holding it whole), ``finish`` signs and
    publishes the file. Leaving the ``with`` block without ``finish`` - by an exception
    or not - discards everything and leaves any existing file at ``path`` untouched.
    """

    def __init__(self, path: Path, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise UsageError(
                f"bundle chunk size must be in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}] bytes"
            )
        self._path = Path(path)
        self._chunk_size = chunk_size
        self._limits = BundleLimits()
        self._chunks = ChunkHasher(chunk_size)
        self._members: list[MemberInfo] = []
        self._names: set[str] = set()
        self._position = 0
        self._state = "open"
        try:
            self._spool: IO[bytes] = tempfile.TemporaryFile(dir=self._path.parent)  # noqa: SIM115
        except OSError as exc:
            raise StorageError(f"cannot write a bundle in {self._path.parent}: {exc}") from exc

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    def abort(self) -> None:
        """Discard the spooled members (no-op after ``finish``)."""
        if self._state != "finished":
            self._state = "aborted"
        self._spool.close()

    def _check_open(self) -> None:
        if self._state != "open":
            raise UsageError(f"bundle writer for {self._path} is {self._state}")

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._spool.write(data)
        except OSError as exc:
            self._state = "failed"
            raise StorageError(f"cannot spool bundle {self._path}: {exc}") from exc
        self._chunks.update(data)
        self._position += len(data)

    def _check_new_member(self, name: str, media_type: str) -> None:
        problem = member_name_problem(name)
        if problem:
            raise UsageError(f"bundle member name {name!r} is invalid: {problem}")
        if media_type_problem(media_type):
            raise UsageError(f"bundle member {name!r}: invalid media type {media_type!r}")
        if name in self._names:
            raise UsageError(f"bundle already has a member named {name!r}")
        if len(self._members) >= self._limits.max_members:
            raise UsageError(f"a bundle holds at most {self._limits.max_members} members")

    def add_member(
        self,
        name: str,
        source: BinaryIO | bytes,
        *,
        size: int | None = None,
        media_type: str = "application/octet-stream",
    ) -> MemberInfo:
        """Append member ``name`` with the bytes of ``source`` (bytes or a binary stream).

        For a stream, exactly ``size`` bytes are read if given; otherwise it is read to
        its end.

        Raises:
            UsageError: invalid or duplicate name, writer not open.
            TruncatedError: the stream ended before ``size`` bytes.
            StorageError: the spool could not be written.
        """
        self._check_open()
        self._check_new_member(name, media_type)
        if isinstance(source, bytes | bytearray | memoryview):
            return self._add(name, io.BytesIO(source), len(source), media_type)
        return self._add(name, source, size, media_type)

    def _add(
        self, name: str, source: IO[bytes], size: int | None, media_type: str
    ) -> MemberInfo:
        if size is not None and size < 0:
            raise UsageError(f"bundle member {name!r}: negative size")
        self._state = "failed"  # until the member is complete
        offset = self._position
        digest, length = self._copy(name, source, size)
        self._state = "open"
        info = MemberInfo(name, offset, length, digest, media_type)
        self._members.append(info)
        self._names.add(name)
        return info

    def _copy(self, name: str, source: IO[bytes], size: int | None) -> tuple[str, int]:
        """Stream ``size`` bytes (or all) of ``source`` into the spool; digest and length."""
        member_hash = hashlib.sha256()
        done = 0
        while size is None or done < size:
            want = COPY_BUFFER_SIZE if size is None else min(size - done, COPY_BUFFER_SIZE)
            block = source.read(want)
            if not block:
                if size is None:
                    break
                raise TruncatedError(
                    f"bundle member {name!r}: source ended after {done} of {size} bytes"
                )
            member_hash.update(block)
            self._emit(block)
            done += len(block)
        return "sha256:" + member_hash.hexdigest(), done

    def finish(
        self,
        content: Mapping[str, Any],
        signing_key: Ed25519PrivateKey | Signer | None,
        release: Release | None = None,
    ) -> BundleInfo:
        """Build and sign the index, write the bundle file atomically, describe it.

        ``release`` (version and expiry) is signed with the index; agents use it to
        refuse replayed or expired bundles (docs/bundle-format.md, section 9). A
        :class:`Signer` with a key list embeds it in the signature document, for
        devices that trust a root key (docs/trust.md).

        Raises:
            UsageError: writer not open.
            FormatError: ``content`` is not JSON data, or the index is over its limit.
            StorageError: the file could not be written.
        """
        self._check_open()
        self._state = "failed"  # until the file is in place
        index_json = encode_index(
            chunk_size=self._chunk_size,
            payload_size=self._position,
            chunk_digests=self._chunks.finish(),
            members=self._members,
            content=content,
            release=release,
        )
        if len(index_json) > self._limits.max_index_size:
            raise FormatError(
                f"bundle index would be {len(index_json)} bytes, over the limit of "
                f"{self._limits.max_index_size}"
            )
        index_bytes = encode_index_bytes(index_json)
        entries = [sign_index(index_bytes, signing_key)] if signing_key else []
        key_list = signing_key.key_list if isinstance(signing_key, Signer) else None
        head = encode_head(index_bytes, encode_signatures(entries, key_list))
        index, _, _ = read_head(head)  # the writer's output must satisfy the reader
        digest, size = self._publish(head)
        self._state = "finished"
        self._spool.close()
        return BundleInfo(
            path=self._path,
            size=size,
            digest=digest,
            index_digest=index.index_digest,
            signer_key_id=entries[0].key_id if entries else None,
            members=tuple(self._members),
        )

    def _publish(self, head: bytes) -> tuple[str, int]:
        """Write head + spool to a temp file beside the target, fsync, rename into place."""
        try:
            fd, tmp = tempfile.mkstemp(
                dir=self._path.parent, prefix=f".{self._path.name}.", suffix=".partial"
            )
        except OSError as exc:
            raise StorageError(f"cannot write bundle {self._path}: {exc}") from exc
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o644)
                whole = hashlib.sha256(head)
                out.write(head)
                self._spool.seek(0)
                while block := self._spool.read(COPY_BUFFER_SIZE):
                    whole.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
                size = out.tell()
            os.replace(tmp, self._path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StorageError(f"cannot write bundle {self._path}: {exc}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # durability of the rename is best effort
            fsync_dir(self._path.parent)
        return "sha256:" + whole.hexdigest(), size
