"""Fixtures for the OCI tests: test images on disk, registries with auth, fault servers."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.fixtures.images import (
    TestImage,
    build_image,
    write_docker_archive,
    write_oci_archive,
    write_oci_layout,
)
from tests.fixtures.services import Registry, run_registry
from tests.oci.servers import HttpServer, TokenIssuer, answer_500, token_responder

USER, PASSWORD = "alice", "s3cret"


@dataclass(frozen=True)
class ImageFiles:
    """One test image written in every local form."""

    image: TestImage
    oci: str
    oci_archive: str
    docker_archive: str
    docker_archive_oci: str


@pytest.fixture(scope="session")
def test_image() -> TestImage:
    """Three layers: gzip, zstd and uncompressed."""
    return build_image(compression=["gzip", "zstd", "none"])


@pytest.fixture(scope="session")
def image_files(tmp_path_factory: pytest.TempPathFactory, test_image: TestImage) -> ImageFiles:
    root = tmp_path_factory.mktemp("images")
    write_oci_layout(root / "layout", test_image, "v1")
    write_oci_archive(root / "image-oci.tar", test_image, "v1")
    write_docker_archive(root / "image-docker.tar", test_image, "app:v1")
    write_docker_archive(root / "image-docker-oci.tar", test_image, "app:v1", layout="oci")
    return ImageFiles(
        test_image,
        oci=f"oci:{root / 'layout'}:v1",
        oci_archive=f"oci-archive:{root / 'image-oci.tar'}:v1",
        docker_archive=f"docker-archive:{root / 'image-docker.tar'}",
        docker_archive_oci=f"docker-archive:{root / 'image-docker-oci.tar'}:app:v1",
    )


def _bcrypt(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt via libxcrypt; Python 3.11 still has the module

        # cost 4: the registry checks the hash on every request
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry requiring htpasswd (Basic) auth for USER/PASSWORD."""
    work = tmp_path_factory.mktemp("basic-registry")
    htpasswd = work / "htpasswd"
    htpasswd.write_text(f"{USER}:{_bcrypt(PASSWORD)}\n")
    extra = f"auth:\n  htpasswd:\n    realm: deltaport-test\n    path: {htpasswd}\n"
    with run_registry(work, extra) as reg:
        yield reg


@dataclass(frozen=True)
class TokenRegistry:
    registry: Registry
    token_log: list[str]


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    """A registry using Bearer token auth, with an in-process token server."""
    work = tmp_path_factory.mktemp("token-registry")
    issuer = TokenIssuer(work)
    log: list[str] = []
    server = HttpServer(token_responder(issuer, {USER: PASSWORD}, log))
    extra = (
        "auth:\n  token:\n"
        f"    realm: http://{server.host}/token\n"
        f"    service: {issuer.service}\n    issuer: {issuer.issuer}\n"
        f"    rootcertbundle: {issuer.cert_path}\n"
    )
    try:
        with run_registry(work, extra) as reg:
            yield TokenRegistry(reg, log)
    finally:
        server.close()


@pytest.fixture
def failing_server() -> Iterator[HttpServer]:
    """An HTTP server answering 500 to everything."""
    server = HttpServer(answer_500)
    yield server
    server.close()
