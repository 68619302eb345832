"""Blob upload: chunked PATCHes that resume from the registry's reported offset.

    POST /v2/<repo>/blobs/uploads/          -> 202, Location (the session)
    PATCH <Location>  Content-Range: a-b    -> 202, Range: 0-b, new Location
    GET <Location>                          -> 204, Range: 0-N  (where to resume)
    PUT <Location>&digest=<digest>          -> 201  (the blob exists only now)

When a PATCH breaks, the client asks the registry how much it holds (GET) and sends
from there, instead of from zero. Only if the registry has dropped the session (Docker
Distribution 2.8 does so when a PATCH body was cut off mid-way) does the upload start
again, a bounded number of times. Chunks are read from a seekable file, so memory
holds at most one chunk.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlencode

import httpx

from deltaport.errors import AuthError, NotFoundError, RegistryError, TransferError
from deltaport.oci.registry.client import RegistryClient

ProgressFn = Callable[[int], None]


@dataclass
class UploadStats:
    """What an upload did (for tests and progress): sessions opened, PATCHes, resumes."""

    sessions: int = 0
    patches: int = 0
    resumes: int = 0
    bytes_sent: int = 0
    resumed_at: list[int] = field(default_factory=list)


def parse_range_end(header: str | None) -> int | None:
    """The next offset after a 'Range: 0-N' (or 'bytes=0-N') header, else None.

    Docker Distribution reports an empty upload as '0-0' as well; that reads as 0 here
    (resending one byte too many is caught by the digest check at PUT)."""
    if not header:
        return None
    start, sep, end = header.removeprefix("bytes=").partition("-")
    if not sep or not start.isdigit() or not end.isdigit():
        return None
    last = int(end)
    return 0 if last == 0 else last + 1


def _upload_scope(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull,push",)


class BlobUpload:
    """Uploads one blob file to REPO, resuming after broken PATCHes."""

    def __init__(self, client: RegistryClient, repo: str, digest: str, size: int,
                 progress: ProgressFn | None = None) -> None:
        self.client = client
        self.repo = repo
        self.digest = digest
        self.size = size
        self.stats = UploadStats()
        self._progress = progress
        self._what = f"upload of blob {digest} to {client.host}/{repo}"
        self._scope = _upload_scope(repo)

    def run(self, path: Path) -> None:
        """Upload the file at PATH (which must hold exactly the blob).

        Raises:
            TransferError: the upload kept failing after the allowed retries.
            RegistryError: the registry refused it (e.g. digest mismatch).
        """
        restarts = 0
        with open(path, "rb") as stream:
            while True:
                location = self._start()
                try:
                    location = self._send_all(stream, location)
                    self._finish(location)
                    return
                except _SessionLost as lost:
                    restarts += 1
                    if restarts > self.client.options.retries:
                        raise TransferError(f"{self._what}: gave up after {restarts} "
                                            f"restarts ({lost})") from None

    def _start(self) -> str:
        response = self.client.request(
            "POST", f"/v2/{self.repo}/blobs/uploads/", scope=self._scope,
            what=f"{self._what}: start", ok=(202,), retry=False,
        )
        self.stats.sessions += 1
        return self._location(response)

    def _location(self, response: httpx.Response) -> str:
        location = response.headers.get("location")
        if not location:
            raise RegistryError(f"{self._what}: registry sent no upload Location")
        return self.client.url(location)

    def _send_all(self, stream: BinaryIO, location: str) -> str:
        offset = 0
        failures = 0
        chunk_size = self.client.options.chunk_size
        while offset < self.size:
            stream.seek(offset)
            chunk = stream.read(min(chunk_size, self.size - offset))
            try:
                location, offset = self._patch(location, chunk, offset)
                failures = 0
            except AuthError:
                raise
            except TransferError as exc:
                failures += 1
                if failures > self.client.options.retries:
                    raise TransferError(f"{self._what}: {exc}") from exc
                time.sleep(self.client.options.retry_backoff * failures)
                location, offset = self._resume_point(location, exc)
        return location

    def _patch(self, location: str, chunk: bytes, offset: int) -> tuple[str, int]:
        end = offset + len(chunk) - 1
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Range": f"{offset}-{end}", "Content-Length": str(len(chunk))}
        self.stats.patches += 1
        response = self.client.request(
            "PATCH", location, scope=self._scope, what=f"{self._what}: bytes {offset}-{end}",
            headers=headers, content=chunk, ok=(202, 204), retry=False,
        )
        self.stats.bytes_sent += len(chunk)
        if self._progress:
            self._progress(len(chunk))
        reported = parse_range_end(response.headers.get("range"))
        new_offset = reported if reported is not None else end + 1
        return self._location(response), new_offset

    def _resume_point(self, location: str, cause: Exception) -> tuple[str, int]:
        """Ask the registry how much of the session it holds."""
        try:
            response = self.client.request(
                "GET", location, scope=self._scope, what=f"{self._what}: status", ok=(204,),
            )
        except (NotFoundError, RegistryError) as exc:
            if isinstance(exc, RegistryError) and exc.status is not None and exc.status >= 500:
                raise
            raise _SessionLost(str(exc)) from cause
        offset = parse_range_end(response.headers.get("range")) or 0
        self.stats.resumes += 1
        self.stats.resumed_at.append(offset)
        if offset > self.size:
            raise _SessionLost(f"registry holds {offset} bytes, more than the blob")
        return self._location(response), offset

    def _finish(self, location: str) -> None:
        separator = "&" if "?" in location else "?"
        url = f"{location}{separator}{urlencode({'digest': self.digest})}"
        try:
            self.client.request("PUT", url, scope=self._scope, what=f"{self._what}: finish",
                                headers={"Content-Length": "0"}, ok=(201, 204), retry=False)
        except RegistryError as exc:
            if exc.status in (400, 404):
                raise _SessionLost(str(exc)) from exc
            raise


class _SessionLost(Exception):
    """The registry no longer knows the upload session: start a new one."""


def mount_blob(client: RegistryClient, repo: str, digest: str, from_repo: str) -> bool:
    """Cross-repository mount of DIGEST from FROM_REPO into REPO; True if mounted."""
    scope = (f"repository:{repo}:pull,push", f"repository:{from_repo}:pull")
    query = urlencode({"mount": digest, "from": from_repo})
    response = client.request(
        "POST", f"/v2/{repo}/blobs/uploads/?{query}", scope=scope,
        what=f"mount of blob {digest} from {from_repo} into {repo}", ok=(201, 202), retry=False,
    )
    if response.status_code == 201:
        return True
    location = response.headers.get("location")
    if location:  # the registry opened an upload session instead: cancel it
        with contextlib.suppress(TransferError):
            client.request("DELETE", location, scope=scope, what="cancel upload",
                           ok=(204, 404), retry=False)
    return False
