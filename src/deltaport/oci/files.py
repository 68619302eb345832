"""Read-only access to named files in a directory or a tar archive, with limits.

docker-archive and oci-archive are tar files; oci is a directory. Readers of those
formats go through this one small interface, so the same layout reader serves a
directory and a tar, and tar/OS errors are mapped to deltaport errors here.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from deltaport.errors import FormatError, StorageError, TruncatedError

MAX_TAR_MEMBERS = 100_000


class Files(Protocol):
    """Named files of an image container."""

    description: str

    def exists(self, name: str) -> bool: ...
    def size(self, name: str) -> int: ...
    def open(self, name: str) -> BinaryIO: ...
    def close(self) -> None: ...


def read_limited(files: Files, name: str, limit: int) -> bytes:
    """The whole of small file NAME, refusing more than LIMIT bytes.

    Raises:
        FormatError: larger than LIMIT (callers check that NAME exists).
    """
    size = files.size(name)
    if size > limit:
        raise FormatError(f"{files.description}: {name} is larger than the {limit}-byte limit")
    with files.open(name) as stream:
        data = stream.read(size + 1)
    if len(data) > limit:
        raise FormatError(f"{files.description}: {name} is larger than the {limit}-byte limit")
    return data


def _normalize(name: str) -> str:
    return posixpath.normpath(name.lstrip("/")).removeprefix("./")


class DirFiles:
    """Files under a directory (an OCI layout)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = f"oci:{root}"

    def _path(self, name: str) -> Path:
        clean = _normalize(name)
        if clean.startswith("..") or os.path.isabs(clean):
            raise FormatError(f"{self.description}: path {name!r} escapes the layout")
        return self.root / clean

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except OSError as exc:
            raise StorageError(f"{self.description}: cannot stat {name}: {exc}") from exc

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")
        except OSError as exc:
            raise StorageError(f"{self.description}: cannot open {name}: {exc}") from exc

    def close(self) -> None:
        return None


class TarFiles:
    """Members of an (uncompressed, seekable) tar file, read in place without extracting."""

    def __init__(self, path: Path, description: str) -> None:
        self.description = description
        try:
            self._tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by close()
        except FileNotFoundError as exc:
            raise StorageError(f"{description}: no such file") from exc
        except OSError as exc:
            raise StorageError(f"{description}: cannot open: {exc}") from exc
        except tarfile.TarError as exc:
            raise FormatError(f"{description}: not a tar archive: {exc}") from exc
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            self._index()
        except BaseException:
            self._tar.close()
            raise
        self._file_size = path.stat().st_size

    def _index(self) -> None:
        try:
            for count, member in enumerate(self._tar, 1):
                if count > MAX_TAR_MEMBERS:
                    raise FormatError(f"{self.description}: more than {MAX_TAR_MEMBERS} members")
                self._members[_normalize(member.name)] = member
        except tarfile.ReadError as exc:
            raise TruncatedError(
                f"{self.description}: archive is truncated or corrupt: {exc}"
            ) from exc
        except tarfile.TarError as exc:
            raise FormatError(f"{self.description}: corrupt tar archive: {exc}") from exc

    def _member(self, name: str) -> tarfile.TarInfo:
        member = self._members.get(_normalize(name))
        if member is None:
            raise FormatError(f"{self.description}: has no member {name}")
        for _ in range(16):  # follow symlinked members (classic docker save)
            if not member.issym():
                return member
            target = _normalize(posixpath.join(posixpath.dirname(member.name), member.linkname))
            found = self._members.get(target)
            if found is None:
                raise FormatError(f"{self.description}: {name} links to missing {target}")
            member = found
        raise FormatError(f"{self.description}: too many symlinks at {name}")

    def exists(self, name: str) -> bool:
        return _normalize(name) in self._members

    def size(self, name: str) -> int:
        return self._member(name).size

    def open(self, name: str) -> BinaryIO:
        member = self._member(name)
        if member.offset_data + member.size > self._file_size:
            raise TruncatedError(
                f"{self.description}: {name} ends beyond the end of the archive (truncated)"
            )
        try:
            stream = self._tar.extractfile(member)
        except tarfile.TarError as exc:
            raise FormatError(f"{self.description}: cannot read {name}: {exc}") from exc
        if stream is None:
            raise FormatError(f"{self.description}: {name} is not a regular file")
        return cast(BinaryIO, stream)

    def close(self) -> None:
        self._tar.close()
