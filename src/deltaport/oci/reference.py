"""Image references in the containers/image transport syntax that skopeo uses.

    docker-archive:PATH[:NAME[:TAG]]     the file `docker save` writes
    oci:DIR[:TAG]                        an OCI image layout directory
    oci-archive:PATH[:TAG]               an OCI image layout in a tar file
    docker://[HOST[:PORT]/]NAME[:TAG|@DIGEST]   a registry (Registry HTTP API v2)

Parsing is pure: it checks the text and never touches disk or network.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from deltaport.errors import UsageError
from deltaport.oci.digest import is_digest

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_ALIASES = frozenset({DOCKER_HUB, "index.docker.io"})  # Docker Hub's names in references
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
        if self.host == DOCKER_HUB and not _looks_like_host(repo.partition("/")[0]):
            text = repo.removeprefix("library/")
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


def _looks_like_host(component: str) -> bool:
    """Would COMPONENT, first in a name, be read as a registry host (Docker's rule)."""
    return "." in component or ":" in component or component == "localhost"


def _split_host(text: str) -> tuple[str, str]:
    first, sep, remainder = text.partition("/")
    if sep and first in DOCKER_HUB_ALIASES:
        text = remainder  # before the host test: "docker.io" has a '.' but is Docker Hub
    elif sep and _looks_like_host(first):
        if not _HOST_RE.match(first):
            raise UsageError(f"invalid registry host {first!r}")
        return first, remainder
    if "/" not in text:
        text = f"library/{text}"
    return DOCKER_HUB, text


PIN_TAG_PREFIX = "sha256-"  # the tag a digest-pinned image is stored under in a scoped copy


def scoped_path(name: DockerName) -> str:
    """``repository:tag`` of NAME in a registry that holds images from many registries.

    Images from different registries must not collide there (``ghcr.io/acme/app:1`` and
    ``docker.io/acme/app:1`` are different images), so the source registry becomes the
    first path component, as ``skopeo sync --scoped`` does. Docker Hub images keep their
    plain path (``library/nginx:latest``, ``acme/app:1``). A port joins the host with
    ``_`` (``reg.local:5000`` → ``reg.local_5000``) and a bracketed IPv6 host becomes
    ``ip6_`` and its full address with ``-`` for ``:``. Host names never hold ``_``; a
    Docker Hub namespace that could be read as a host component here (one with ``.``
    or ``_``, or ``localhost``: the grammar allows them, Docker Hub does not) keeps a
    ``docker.io/`` prefix, so different registries never share a path.

    A digest-pinned NAME (``app@sha256:…``, with or without a tag: the digest decides,
    as Docker does) is stored under the tag ``sha256-<hex>``: the copy's own manifest is
    rebuilt and has another digest, so the pin becomes a tag that names it; the image
    ID checked on arrival and at activation is what proves it is the pinned image.
    """
    repository = name.repository
    if name.host != DOCKER_HUB:
        repository = f"{_host_component(name.host)}/{repository}"
    elif _looks_like_scoped_host(repository.partition("/")[0]):
        repository = f"{DOCKER_HUB}/{repository}"  # a namespace the grammar allows, Hub doesn't
    if name.digest is not None:
        return f"{repository}:{PIN_TAG_PREFIX}{name.digest.partition(':')[2]}"
    return f"{repository}:{name.tag or DEFAULT_TAG}"


def _looks_like_scoped_host(component: str) -> bool:
    """Could COMPONENT be a host written by :func:`_host_component`."""
    return _looks_like_host(component) or "_" in component


def _host_component(host: str) -> str:
    """HOST[:PORT] as one repository path component (see :func:`scoped_path`)."""
    host = host.lower()
    port = ""
    if host.startswith("["):
        address, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":")
        host = "ip6_" + ipaddress.IPv6Address(address).exploded.replace(":", "-")
    elif ":" in host:
        host, _, port = host.partition(":")
    component = f"{host}_{port}" if port else host
    if not re.fullmatch(_COMPONENT, component):
        raise UsageError(f"registry host {host!r} cannot be a repository path component")
    return component


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
