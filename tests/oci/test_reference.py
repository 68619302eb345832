"""Image reference parsing: every transport, defaults, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltaport.errors import UsageError
from deltaport.oci import DockerName, ImageReference, Transport, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("docker-archive:/tmp/a.tar", ImageReference(Transport.DOCKER_ARCHIVE, Path("/tmp/a.tar"))),
        ("docker-archive:a.tar:app:v1", ImageReference(
            Transport.DOCKER_ARCHIVE, Path("a.tar"),
            DockerName("docker.io", "library/app", "v1"))),
        ("docker-archive:a.tar:127.0.0.1:5000/team/app", ImageReference(
            Transport.DOCKER_ARCHIVE, Path("a.tar"),
            DockerName("127.0.0.1:5000", "team/app", "latest"))),
        ("oci:/var/lib/layout", ImageReference(Transport.OCI, Path("/var/lib/layout"))),
        ("oci:layout:v1.2", ImageReference(Transport.OCI, Path("layout"), tag="v1.2")),
        ("oci-archive:x.tar:edge",
         ImageReference(Transport.OCI_ARCHIVE, Path("x.tar"), tag="edge")),
        ("docker://localhost:5000/app:v1", ImageReference(
            Transport.DOCKER, name=DockerName("localhost:5000", "app", "v1"))),
        ("docker://registry.example.com/a/b/c", ImageReference(
            Transport.DOCKER, name=DockerName("registry.example.com", "a/b/c", "latest"))),
        (f"docker://127.0.0.1:5000/app@{DIGEST}", ImageReference(
            Transport.DOCKER, name=DockerName("127.0.0.1:5000", "app", None, DIGEST))),
        (f"docker://127.0.0.1:5000/app:v1@{DIGEST}", ImageReference(
            Transport.DOCKER, name=DockerName("127.0.0.1:5000", "app", "v1", DIGEST))),
        ("docker://alpine", ImageReference(
            Transport.DOCKER, name=DockerName("docker.io", "library/alpine", "latest"))),
    ],
)
def test_parses(text: str, expected: ImageReference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "app:v1",                          # unknown transport "app"
        "nonsense",                        # no transport
        "docker:app",                      # docker needs //
        "docker://",                       # nothing after //
        "docker://127.0.0.1:5000/App:v1",  # uppercase repository
        "docker://127.0.0.1:5000/app:bad tag",
        "docker://127.0.0.1:5000/app@sha256:short",
        "oci:",                            # empty path
        "oci:dir:bad tag",
        f"docker-archive:a.tar:app@{DIGEST}",
        "docker-archive:" + "x" * 5000,
    ],
)
def test_refuses_bad_references(text: str) -> None:
    with pytest.raises(UsageError):
        parse_reference(text)


def test_unknown_transport_message_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="docker-archive:, oci:, oci-archive: or docker://"):
        parse_reference("dir:/tmp/x")


@pytest.mark.parametrize(
    "text",
    ["docker://127.0.0.1:5000/app:v1", "oci:/tmp/l:v1", "oci-archive:/tmp/a.tar",
     "docker-archive:/tmp/a.tar:app:v1", f"docker://example.com/a/b@{DIGEST}"],
)
def test_str_round_trips(text: str) -> None:
    assert str(parse_reference(text)) == text
    assert parse_reference(str(parse_reference(text))) == parse_reference(text)
