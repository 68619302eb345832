"""The layer-level delta engine: signatures, ranking, patch build and streaming apply.

Works on uncompressed layer tars on disk. Image-level orchestration lives in
``deltaport.delta.image``; the patch byte format is specified in docs/patch-format.md.
"""

from __future__ import annotations

from deltaport.delta.apply import apply_layer_patch, read_patch_requirements
from deltaport.delta.build import build_full_layer, build_layer_patch
from deltaport.delta.model import (
    ApplyLimits,
    DeltaConfig,
    LayerPatchStats,
    PatchRequirements,
    SourceLayer,
)
from deltaport.delta.signature import (
    Estimate,
    FileSignature,
    ImageSignature,
    LayerSignature,
    SignatureLimits,
    dump_image_signature,
    estimate_patch_size,
    layer_signature,
    load_image_signature,
)

__all__ = [
    "ApplyLimits",
    "DeltaConfig",
    "Estimate",
    "FileSignature",
    "ImageSignature",
    "LayerPatchStats",
    "LayerSignature",
    "PatchRequirements",
    "SignatureLimits",
    "SourceLayer",
    "apply_layer_patch",
    "build_full_layer",
    "build_layer_patch",
    "dump_image_signature",
    "estimate_patch_size",
    "layer_signature",
    "load_image_signature",
    "read_patch_requirements",
]
