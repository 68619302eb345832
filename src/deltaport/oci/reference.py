"""Image references in the containers/image transport syntax that skopeo uses.

    docker-archive:PATH[:NAME[:TAG]]     the file `docker save` writes
    oci:DIR[:TAG]                        an OCI image layout directory
    oci-archive:PATH[:TAG]               an OCI image layout in a tar file
    docker://[HOST[:PORT]/]NAME[:TAG|@DIGEST]   a registry (Registry HTTP API v2)

Parsing is pure: it checks the text and never touches disk or network.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from deltaport.errors import UsageError
from deltaport.oci.digest import is_digest

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"
MAX_REFERENCE_LENGTH = 4096

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?$")
_OCI_REF_NAME_RE = re.compile(r"^[A-Za-z0-9._:@/+-]+$")


class Transport(enum.Enum):
    """Where an image lives."""

    DOCKER_ARCHIVE = "docker-archive"
    OCI = "oci"
    OCI_ARCHIVE = "oci-archive"
    DOCKER = "docker"


@dataclass(frozen=True)
class DockerName:
    """A registry image name: HOST, repository NAME, and a TAG and/or DIGEST."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def familiar(self) -> str:
        """NAME[:TAG] as Docker shows it (no docker.io/library/ prefix)."""
        repo = self.repository
        if self.host == DOCKER_HUB:
            repo = repo.removeprefix("library/")
            text = repo
        else:
            text = f"{self.host}/{repo}"
        return f"{text}:{self.tag}" if self.tag else text

    @property
    def api_host(self) -> str:
        """The host to send Registry API requests to."""
        return DOCKER_HUB_API if self.host == DOCKER_HUB else self.host


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference.

    PATH is set for file transports; NAME (a DockerName) for docker:// and for a
    docker-archive NAME:TAG; TAG for oci/oci-archive.
    """

    transport: Transport
    path: Path | None = None
    name: DockerName | None = None
    tag: str | None = None

    def __str__(self) -> str:
        if self.transport is Transport.DOCKER:
            return f"docker://{self.name}"
        text = f"{self.transport.value}:{self.path}"
        if self.transport is Transport.DOCKER_ARCHIVE and self.name is not None:
            text += f":{self.name.familiar}"
        elif self.tag is not None:
            text += f":{self.tag}"
        return text


def parse_docker_name(text: str, default_tag: bool = True) -> DockerName:
    """Parse [HOST[:PORT]/]NAME[:TAG][@DIGEST] the way Docker does.

    The first component is a host if it has a '.' or ':' or is 'localhost';
    otherwise the name is on Docker Hub (single names get 'library/').

    Raises:
        UsageError: TEXT is not a valid name.
    """
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not is_digest(digest):
            raise UsageError(f"invalid digest {digest!r} in image name {text!r}")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise UsageError(f"invalid tag {tag!r} in image name {text!r}")
    host, repository = _split_host(rest)
    if not _NAME_RE.match(repository):
        raise UsageError(
            f"invalid repository name {repository!r} in {text!r} "
            "(lowercase letters, digits, separators . _ - /)"
        )
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return DockerName(host=host, repository=repository, tag=tag, digest=digest)


def _split_host(text: str) -> tuple[str, str]:
    first, sep, remainder = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _HOST_RE.match(first):
            raise UsageError(f"invalid registry host {first!r}")
        return first, remainder
    if first in ("docker.io", "index.docker.io") and sep:
        text = remainder
    if "/" not in text:
        text = f"library/{text}"
    return DOCKER_HUB, text


def _split_path(body: str, text: str) -> tuple[Path, str | None]:
    path, sep, rest = body.partition(":")
    if not path:
        raise UsageError(f"image reference {text!r} has an empty path")
    return Path(path), (rest if sep else None)


def parse_reference(text: str) -> ImageReference:
    """Parse an image reference (see the module docstring).

    Raises:
        UsageError: unknown transport or malformed reference; the message says which.
    """
    if len(text) > MAX_REFERENCE_LENGTH:
        raise UsageError(f"image reference longer than {MAX_REFERENCE_LENGTH} characters")
    transport_name, sep, body = text.partition(":")
    if not sep:
        raise UsageError(
            f"image reference {text!r} has no transport; use docker-archive:, oci:, "
            "oci-archive: or docker://"
        )
    try:
        transport = Transport(transport_name)
    except ValueError:
        raise UsageError(
            f"unknown transport {transport_name!r} in {text!r}; use docker-archive:, "
            "oci:, oci-archive: or docker://"
        ) from None
    if transport is Transport.DOCKER:
        if not body.startswith("//") or len(body) <= 2:
            raise UsageError(f"registry reference {text!r} must look like docker://HOST/NAME:TAG")
        return ImageReference(transport, name=parse_docker_name(body[2:]))
    path, rest = _split_path(body, text)
    if transport is Transport.DOCKER_ARCHIVE:
        name = parse_docker_name(rest) if rest else None
        if name is not None and name.digest is not None:
            raise UsageError(f"docker-archive reference {text!r} cannot name a digest")
        return ImageReference(transport, path=path, name=name)
    if rest is not None and not _OCI_REF_NAME_RE.match(rest):
        raise UsageError(f"invalid image tag {rest!r} in {text!r}")
    return ImageReference(transport, path=path, tag=rest or None)
