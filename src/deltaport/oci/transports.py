"""open_source / open_destination: pick the transport a reference names."""

from __future__ import annotations

from deltaport.errors import StorageError
from deltaport.oci.archive import MANIFEST_JSON, DockerArchiveDestination, DockerArchiveSource
from deltaport.oci.base import ImageDestination, ImageSource
from deltaport.oci.files import TarFiles
from deltaport.oci.layout import (
    LayoutDestination,
    LayoutSource,
    OciArchiveDestination,
    open_layout_source,
)
from deltaport.oci.options import TransportOptions
from deltaport.oci.reference import ImageReference, Transport, parse_reference
from deltaport.oci.registry.image import RegistryDestination, RegistrySource


def as_reference(ref: str | ImageReference) -> ImageReference:
    """REF parsed if it is text."""
    return parse_reference(ref) if isinstance(ref, str) else ref


def open_source(ref: str | ImageReference,
                options: TransportOptions | None = None) -> ImageSource:
    """Open an image for reading (use as a context manager).

    Raises:
        UsageError: bad reference. StorageError: missing file. FormatError: bad archive.
    """
    reference = as_reference(ref)
    opts = options or TransportOptions()
    if reference.transport is Transport.DOCKER:
        return RegistrySource(reference, opts)
    if reference.transport is Transport.DOCKER_ARCHIVE:
        return _open_docker_archive(reference, opts)
    return open_layout_source(reference, opts)


def _open_docker_archive(reference: ImageReference, options: TransportOptions) -> ImageSource:
    assert reference.path is not None
    if not reference.path.is_file():
        raise StorageError(f"{reference}: no such file")
    files = TarFiles(reference.path, str(reference))
    if files.exists(MANIFEST_JSON) or not files.exists("index.json"):
        return DockerArchiveSource(reference, options, files)
    tag = reference.name.tag if reference.name is not None else None
    return LayoutSource(reference, options, files, tag)


def open_destination(ref: str | ImageReference,
                     options: TransportOptions | None = None) -> ImageDestination:
    """Open an image destination (use as a context manager; call commit() to keep it)."""
    reference = as_reference(ref)
    opts = options or TransportOptions()
    if reference.transport is Transport.DOCKER:
        return RegistryDestination(reference, opts)
    if reference.transport is Transport.DOCKER_ARCHIVE:
        return DockerArchiveDestination(reference, opts)
    if reference.transport is Transport.OCI:
        return LayoutDestination(reference, opts)
    return OciArchiveDestination(reference, opts)
