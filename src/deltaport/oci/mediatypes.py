"""Media types of manifests, configs and layers, and what each one implies.

Docker v2 schema 2 and OCI name the same things differently; deltaport reads both and
writes whichever the destination supports (OCI for layouts, either for registries).
"""

from __future__ import annotations

from typing import Final

from deltaport.oci.compression import Compression

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"

DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_FOREIGN_GZIP: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

IMAGE_MANIFESTS: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
ALL_MANIFESTS: Final = IMAGE_MANIFESTS | INDEXES

LAYER_COMPRESSION: Final[dict[str, Compression]] = {
    OCI_LAYER: Compression.NONE,
    OCI_LAYER_GZIP: Compression.GZIP,
    OCI_LAYER_ZSTD: Compression.ZSTD,
    OCI_LAYER_NONDIST: Compression.NONE,
    OCI_LAYER_NONDIST_GZIP: Compression.GZIP,
    DOCKER_LAYER: Compression.NONE,
    DOCKER_LAYER_GZIP: Compression.GZIP,
    DOCKER_LAYER_FOREIGN_GZIP: Compression.GZIP,
}

_OCI_LAYER_FOR: Final = {
    Compression.NONE: OCI_LAYER,
    Compression.GZIP: OCI_LAYER_GZIP,
    Compression.ZSTD: OCI_LAYER_ZSTD,
}
_DOCKER_LAYER_FOR: Final = {
    Compression.NONE: DOCKER_LAYER,
    Compression.GZIP: DOCKER_LAYER_GZIP,
}


def layer_compression(media_type: str) -> Compression | None:
    """The compression a layer media type implies, or None if it is not a layer type."""
    return LAYER_COMPRESSION.get(media_type)


def layer_media_type(compression: Compression, manifest_media_type: str) -> str:
    """The layer media type for COMPRESSION inside a manifest of MANIFEST_MEDIA_TYPE.

    Raises:
        KeyError: Docker schema 2 has no zstd layer type (callers pick OCI then).
    """
    if manifest_media_type == DOCKER_MANIFEST:
        return _DOCKER_LAYER_FOR[compression]
    return _OCI_LAYER_FOR[compression]


def config_media_type(manifest_media_type: str) -> str:
    """The config media type that belongs in a manifest of MANIFEST_MEDIA_TYPE."""
    return DOCKER_CONFIG if manifest_media_type == DOCKER_MANIFEST else OCI_CONFIG


def manifest_type_supports(manifest_media_type: str, compression: Compression) -> bool:
    """Whether a manifest of this type can name a layer with this compression."""
    if manifest_media_type == DOCKER_MANIFEST:
        return compression in _DOCKER_LAYER_FOR
    return compression in _OCI_LAYER_FOR
