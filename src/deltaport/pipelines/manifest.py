"""Deployment manifests for the pipelines: the names of :mod:`deltaport.manifests`.

Kept so callers importing ``deltaport.pipelines.manifest`` keep working.
"""

from deltaport.manifests import (
    KIND_COMPOSE,
    KIND_IOTEDGE,
    MANIFEST_MAX_BYTES,
    REFERENCE_MAX_CHARS,
    Kind,
    Manifest,
    ModuleImage,
    local_reference,
    normalize_reference,
    parse_manifest,
    rewrite_for_device,
    split_registry,
)

__all__ = [
    "KIND_COMPOSE",
    "KIND_IOTEDGE",
    "MANIFEST_MAX_BYTES",
    "REFERENCE_MAX_CHARS",
    "Kind",
    "Manifest",
    "ModuleImage",
    "local_reference",
    "normalize_reference",
    "parse_manifest",
    "rewrite_for_device",
    "split_registry",
]
