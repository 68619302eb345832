"""Upload resume logic against a fake registry (httpx.MockTransport) that keeps the
part of a PATCH that arrived before the connection broke, as a registry that supports
resuming does, so the client must continue from the middle of a chunk."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import httpx
import pytest

from deltaport.errors import AuthError, TransferError
from deltaport.oci import TransportOptions
from deltaport.oci.registry.client import RegistryClient
from deltaport.oci.registry.upload import BlobUpload

HOST = "fake.registry.test"


class FakeRegistry:
    """Stores one upload; breaks chosen PATCHes after BREAK_AT bytes of their body."""

    def __init__(self, break_patches: set[int], break_at: int, lose_session: bool = False):
        self.data = bytearray()
        self.break_patches = break_patches
        self.break_at = break_at
        self.lose_session = lose_session
        self.patches = 0
        self.sessions = 0
        self.blobs: dict[str, bytes] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        location = {"Location": f"https://{HOST}/v2/app/blobs/uploads/u{self.sessions}?_state=x"}
        if path == "/v2/":
            return httpx.Response(200)
        if method == "POST":
            self.sessions += 1
            self.data = bytearray()
            location = {"Location": f"/v2/app/blobs/uploads/u{self.sessions}?_state=x"}
            return httpx.Response(202, headers=location)
        if not path.endswith(f"u{self.sessions}"):
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UPLOAD_UNKNOWN"}]})
        if method == "PATCH":
            self.patches += 1
            start = int(re.match(r"(\d+)-", request.headers["content-range"]).group(1))  # type: ignore[union-attr]
            assert start == len(self.data), "client must send from the registry's offset"
            body = request.content
            if self.patches in self.break_patches:
                self.data += body[: self.break_at]
                if self.lose_session:
                    self.sessions += 100
                raise httpx.ReadError("connection reset by peer")
            self.data += body
            return httpx.Response(202, headers={**location, "Range": f"0-{len(self.data) - 1}"})
        if method == "GET":
            return httpx.Response(204, headers={**location, "Range": f"0-{len(self.data) - 1}"})
        if method == "PUT":
            digest = request.url.params["digest"]
            if "sha256:" + hashlib.sha256(self.data).hexdigest() != digest:
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
            self.blobs[digest] = bytes(self.data)
            return httpx.Response(201)
        return httpx.Response(405)


def _upload(tmp_path: Path, fake: FakeRegistry, size: int = 100_000,
            retries: int = 3) -> tuple[BlobUpload, bytes]:
    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    options = TransportOptions(chunk_size=16 * 1024, retries=retries, retry_backoff=0.0)
    client = RegistryClient(HOST, options, http=httpx.Client(transport=httpx.MockTransport(fake)))
    upload = BlobUpload(client, "app", digest, size)
    upload.run(path)
    return upload, data


def test_resumes_in_the_middle_of_a_chunk(tmp_path: Path) -> None:
    fake = FakeRegistry(break_patches={3}, break_at=5000)
    upload, data = _upload(tmp_path, fake)
    assert fake.blobs[upload.digest] == data
    assert upload.stats.sessions == 1
    assert upload.stats.resumed_at == [2 * 16 * 1024 + 5000]
    assert upload.stats.bytes_sent == len(data) - 5000  # the lost tail of chunk 3 only


def test_several_breaks(tmp_path: Path) -> None:
    fake = FakeRegistry(break_patches={1, 2, 5}, break_at=1000)
    upload, data = _upload(tmp_path, fake)
    assert fake.blobs[upload.digest] == data
    assert upload.stats.resumes == 3
    assert upload.stats.sessions == 1


def test_lost_session_restarts(tmp_path: Path) -> None:
    fake = FakeRegistry(break_patches={2}, break_at=1000, lose_session=True)
    upload, data = _upload(tmp_path, fake)
    assert fake.blobs[upload.digest] == data
    assert upload.stats.sessions == 2


def test_gives_up_after_the_retries(tmp_path: Path) -> None:
    fake = FakeRegistry(break_patches=set(range(1, 100)), break_at=10)
    with pytest.raises(TransferError, match="upload of blob sha256:"):
        _upload(tmp_path, fake, retries=2)


def test_auth_refusal_is_not_retried(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="x"'})

    with pytest.raises(AuthError, match="requires a username and password"):
        client = RegistryClient(HOST, TransportOptions(),
                                http=httpx.Client(transport=httpx.MockTransport(refuse)))
        path = tmp_path / "b"
        path.write_bytes(b"x")
        BlobUpload(client, "app", "sha256:" + hashlib.sha256(b"x").hexdigest(), 1).run(path)
