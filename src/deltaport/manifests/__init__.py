"""Deployment manifests: which images a deployment needs, and their device-local rewrite.

Read as the tools that write them do: IoT Edge deployments as iotedgedev and edgeAgent
(:mod:`.iotedge`), Compose files by the compose-spec (:mod:`.compose`, interpolation in
:mod:`.interpolation`), image references by the distribution grammar (:mod:`.reference`),
all within named limits (:mod:`.yamlload`). Rules for users: docs/manifests.md.
"""

from deltaport.limits import MANIFEST_MAX_BYTES
from deltaport.manifests.model import KIND_COMPOSE, KIND_IOTEDGE, Kind, Manifest, ModuleImage
from deltaport.manifests.parse import parse_manifest, rewrite_for_device
from deltaport.manifests.reference import (
    REFERENCE_MAX_CHARS,
    canonical_reference,
    local_reference,
    normalize_reference,
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
    "canonical_reference",
    "local_reference",
    "normalize_reference",
    "parse_manifest",
    "rewrite_for_device",
    "split_registry",
]
