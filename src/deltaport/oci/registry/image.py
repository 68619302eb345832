"""``docker://`` images: a registry as an ImageSource and an ImageDestination.

Reading resolves a tag to a manifest (an index/manifest list is resolved to the
requested platform), verifies every manifest fetched by digest, and streams blobs with
``Range`` requests that pick up where a broken download stopped. Writing uploads
blobs (mounting them from another repository of the same registry when possible),
then the config, and pushes the manifest LAST, so a failed push never leaves a tag
pointing at half an image.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

import httpx

from deltaport.errors import FormatError, NotFoundError, TransferError, UsageError
from deltaport.oci import mediatypes as mt
from deltaport.oci.base import ImageDestination, ImageSource, manifest_matches
from deltaport.oci.digest import sha256_digest, verify_bytes
from deltaport.oci.model import (
    Descriptor,
    Layer,
    build_manifest,
    choose_manifest_type,
    manifest_media_type,
    parse_index,
    select_platform,
)
from deltaport.oci.options import TransportOptions
from deltaport.oci.reference import DockerName, ImageReference, Transport
from deltaport.oci.registry.client import RegistryClient
from deltaport.oci.registry.upload import BlobUpload, mount_blob

ACCEPT_MANIFESTS = ", ".join(
    [mt.OCI_MANIFEST, mt.DOCKER_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST]
)
STREAM_CHUNK = 1 << 16


def _pull_scope(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull",)


def fetch_manifest(client: RegistryClient, repo: str, ref: str,
                   limit: int) -> tuple[bytes, str]:
    """GET the manifest or index REF (tag or digest), at most LIMIT bytes, verified if
    REF is a digest.

    Raises:
        NotFoundError: unknown tag/digest. FormatError: too large.
    """
    what = f"manifest {repo}:{ref}" if ":" not in ref else f"manifest {repo}@{ref}"
    response = client.request("GET", f"/v2/{repo}/manifests/{ref}", scope=_pull_scope(repo),
                              what=what, headers={"Accept": ACCEPT_MANIFESTS}, stream=True)
    try:
        data = bytearray()
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > limit:
                raise FormatError(f"{what} on {client.host} is larger than {limit} bytes")
    except httpx.TransportError as exc:
        raise TransferError(f"registry {client.host}: {what} download broke: {exc}") from exc
    finally:
        response.close()
    body = bytes(data)
    if ref.startswith("sha"):
        verify_bytes(body, ref, f"{what} on {client.host}")
    declared = response.headers.get("content-type", "").split(";")[0].strip()
    return body, manifest_media_type(body, declared, what)


class BlobStream(io.RawIOBase):
    """A blob download that resumes with ``Range: bytes=N-`` when the stream breaks."""

    def __init__(self, client: RegistryClient, repo: str, digest: str) -> None:
        self._client = client
        self._repo = repo
        self._digest = digest
        self.offset = 0
        self.reconnects = 0
        self._response: httpx.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._pending = b""

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        headers = {"Range": f"bytes={self.offset}-"} if self.offset else {}
        response = self._client.request(
            "GET", f"/v2/{self._repo}/blobs/{self._digest}", scope=_pull_scope(self._repo),
            what=f"blob {self._digest} of {self._repo}", headers=headers, stream=True,
            ok=(200, 206), follow_redirects=True,
        )
        if self.offset and response.status_code != 206:
            response.close()
            raise TransferError(f"registry {self._client.host} ignored Range for blob "
                                f"{self._digest}; cannot resume at byte {self.offset}")
        self._response = response
        self._chunks = response.iter_raw(STREAM_CHUNK)

    def _next_chunk(self) -> bytes:
        for _ in range(self._client.options.retries + 1):
            if self._chunks is None:
                self._open()
            assert self._chunks is not None
            try:
                return next(self._chunks, b"")
            except httpx.TransportError as exc:
                self._drop()
                self.reconnects += 1
                last = exc
        raise TransferError(f"download of blob {self._digest} from {self._client.host} "
                            f"kept breaking at byte {self.offset}: {last}") from last

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
        self._response = None
        self._chunks = None

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._pending:
            self._pending = self._next_chunk()
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self.offset += n
        return n

    def close(self) -> None:
        self._drop()
        super().close()


class RegistrySource(ImageSource):
    """Reads docker://HOST/NAME[:TAG|@DIGEST]."""

    def __init__(self, reference: ImageReference, options: TransportOptions) -> None:
        super().__init__(reference, options)
        assert reference.name is not None
        self.name: DockerName = reference.name
        self.client = RegistryClient(self.name.api_host, options)

    def close(self) -> None:
        self.client.close()

    def _raw_manifest(self) -> tuple[bytes, str]:
        repo = self.name.repository
        ref = self.name.digest or self.name.tag or "latest"
        limit = self.options.max_manifest_bytes
        data, media_type = fetch_manifest(self.client, repo, ref, limit)
        if media_type in mt.INDEXES:
            index = parse_index(data, media_type, f"index {self.reference}")
            entry = select_platform(index, self.options.platform, f"image {self.reference}")
            data, media_type = fetch_manifest(self.client, repo, entry.digest, limit)
        if media_type not in mt.IMAGE_MANIFESTS:
            raise FormatError(f"{self.reference}: unsupported manifest type {media_type!r}")
        return data, media_type

    def _open_raw(self, descriptor: Descriptor) -> BinaryIO:
        raw = BlobStream(self.client, self.name.repository, descriptor.digest)
        return cast(BinaryIO, io.BufferedReader(raw, STREAM_CHUNK))


class RegistryDestination(ImageDestination):
    """Writes docker://HOST/NAME[:TAG]: blobs first, manifest last."""

    compress_uncompressed = True

    def __init__(self, reference: ImageReference, options: TransportOptions) -> None:
        super().__init__(reference, options)
        assert reference.name is not None
        self.name: DockerName = reference.name
        self.client = RegistryClient(self.name.api_host, options)
        self._spool = Path(tempfile.mkdtemp(prefix="deltaport-push-", dir=options.temp_dir))
        self._mount_sources: list[str] = []
        self.uploads: list[BlobUpload] = []

    @property
    def repo(self) -> str:
        return self.name.repository

    def note_source(self, source: ImageReference) -> None:
        if (source.transport is Transport.DOCKER and source.name is not None
                and source.name.api_host == self.name.api_host
                and source.name.repository != self.repo):
            self._mount_sources.append(source.name.repository)

    def _spool_dir(self) -> Path:
        return self._spool

    def _exists(self, digest: str) -> bool:
        try:
            self.client.request("HEAD", f"/v2/{self.repo}/blobs/{digest}",
                                scope=(f"repository:{self.repo}:pull,push",),
                                what=f"blob {digest} of {self.repo}")
        except NotFoundError:
            return False
        return True

    def _blob_present(self, layer: Layer) -> bool:
        if self._exists(layer.digest):
            return True
        return any(mount_blob(self.client, self.repo, layer.digest, source)
                   for source in self._mount_sources)

    def _store_blob(self, path: Path, layer: Layer) -> Layer:
        if not self._exists(layer.digest):
            upload = BlobUpload(self.client, self.repo, layer.digest, layer.size)
            self.uploads.append(upload)
            upload.run(path)
        return layer

    def _push_bytes(self, data: bytes) -> None:
        digest = sha256_digest(data)
        if self._exists(digest):
            return
        path = self._spool / "config.json"
        path.write_bytes(data)
        BlobUpload(self.client, self.repo, digest, len(data)).run(path)

    def _commit(self, config_bytes: bytes, layers: list[Layer],
                manifest_media_type: str | None, manifest_bytes: bytes | None) -> str:
        self._push_bytes(config_bytes)
        media_type = choose_manifest_type(layers, manifest_media_type or mt.OCI_MANIFEST)
        if manifest_bytes is not None and manifest_media_type == media_type and (
            manifest_matches(manifest_bytes, media_type, config_bytes, layers)
        ):
            data = manifest_bytes
        else:
            data, _ = build_manifest(config_bytes, layers, media_type)
        digest = sha256_digest(data)
        ref = self.name.tag or self.name.digest or "latest"
        if self.name.digest and not self.name.tag and self.name.digest != digest:
            raise UsageError(f"{self.reference}: the manifest to push has digest {digest}")
        self.client.request("PUT", f"/v2/{self.repo}/manifests/{ref}",
                            scope=(f"repository:{self.repo}:pull,push",),
                            what=f"manifest {self.repo}:{ref}",
                            headers={"Content-Type": media_type}, content=data, ok=(201, 200))
        return digest

    def _finalize(self) -> None:
        self.client.close()
        shutil.rmtree(self._spool, ignore_errors=True)
