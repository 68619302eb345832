"""Image references in manifests, by the distribution/reference grammar.

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component { "/" path-component }
    domain     := host [ ":" port ]     (a '.' or ':' in it, 'localhost', or [IPv6])

(https://github.com/distribution/reference/blob/main/reference.go). A name without a
domain is on Docker Hub (``docker.io``), and a single path component there is under
``library/``: ``nginx``, ``library/nginx:latest`` and ``docker.io/library/nginx:latest``
are one image. Path components are lowercase. The parsing itself is
:func:`deltaport.oci.reference.parse_docker_name`, shared with the registry client.
"""

from __future__ import annotations

import dataclasses

from deltaport.errors import FormatError, UsageError
from deltaport.oci.reference import DOCKER_HUB, DockerName, parse_docker_name, scoped_path

REFERENCE_MAX_CHARS = 500
TRANSPORT_PREFIX = "docker://"
UPSTREAM = "$upstream"  # nested IoT Edge: the parent device's registry, resolved on the device


def parse_image(reference: str, where: str = "image") -> DockerName:
    """REFERENCE parsed, ':latest' added when it has neither tag nor digest.

    Raises:
        FormatError: not a valid reference; the message names WHERE and why.
    """
    text = reference.strip().removeprefix(TRANSPORT_PREFIX)
    if not text:
        raise FormatError(f"{where}: empty image reference")
    if len(text) > REFERENCE_MAX_CHARS:
        raise FormatError(f"{where}: image reference longer than {REFERENCE_MAX_CHARS} characters")
    if text.startswith(UPSTREAM):
        raise FormatError(
            f"{where}: image {text[:80]!r} names {UPSTREAM}, the parent device of a nested "
            "IoT Edge deployment; deltaport sends images to each device's own registry, so "
            "name the image's real registry instead"
        )
    if text.endswith(":") or text.endswith("@"):
        raise FormatError(f"{where}: image {text[:80]!r} ends with an empty tag or digest")
    try:
        return parse_docker_name(text)
    except UsageError as exc:
        raise FormatError(f"{where}: {exc}") from None


def familiar(name: DockerName) -> str:
    """NAME as Docker shows it: no docker.io/library/, tag and digest kept."""
    text = name.familiar
    return f"{text}@{name.digest}" if name.digest else text


def normalize_reference(reference: str) -> str:
    """The one spelling an image is registered and looked up under (Docker's familiar form).

    ``nginx``, ``docker.io/library/nginx`` and ``docker://nginx:latest`` all give
    ``nginx:latest``; ``reg.io/app`` gives ``reg.io/app:latest``; a digest is kept
    (``app:1@sha256:…`` keeps both).

    Raises:
        FormatError: not a valid reference.
    """
    return familiar(parse_image(reference))


def familiar_repository(reference: str) -> str:
    """REFERENCE's repository as Docker shows it, without tag or digest (``reg.io:5000/app``)."""
    name = parse_image(reference)
    return dataclasses.replace(name, tag=None, digest=None).familiar


def canonical_reference(reference: str) -> str:
    """The fully qualified form: ``docker.io/library/nginx:latest``."""
    return str(parse_image(reference))


def split_registry(reference: str) -> tuple[str | None, str]:
    """("registry host", "repository[:tag][@digest]"); host None for Docker Hub."""
    name = parse_image(reference)
    path = familiar(name) if name.host == DOCKER_HUB else familiar(name).partition("/")[2]
    return (None if name.host == DOCKER_HUB else name.host), path


def local_reference(reference: str, local_registry: str) -> str:
    """REFERENCE as the device's local registry serves it.

    The path is the one the device stores a bundle's target under
    (:func:`deltaport.oci.reference.scoped_path`, which
    :func:`deltaport.delta.image.target_name` uses too): ``nginx`` is
    ``library/nginx:latest``, ``ghcr.io/acme/app:1`` is ``ghcr.io/acme/app:1`` and
    ``acme/app:1`` is ``acme/app:1`` (two images, two names), and a digest-pinned
    ``app@sha256:ab…`` is ``library/app:sha256-ab…``.
    """
    return f"{local_registry}/{scoped_path(parse_image(reference))}"
