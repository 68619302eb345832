"""Image signatures and source ranking, at the image level.

``create_image_signature`` reads an image once (streaming each layer) and produces the
signature file the hub stores at registration. ``rank_sources`` orders candidate
source images — given only their signatures — by the estimated size of the bundle
that would rebuild a target from them. Both are thin over the pure functions of
``deltaport.delta.signature``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from deltaport.delta.signature import (
    ImageSignature,
    LayerSignature,
    estimate_patch_size,
    layer_signature,
)
from deltaport.oci import TransportOptions, open_source

ProgressFn = Callable[[str, int, int], None]


def create_image_signature(
    ref: str, options: TransportOptions | None = None, progress: ProgressFn | None = None
) -> ImageSignature:
    """Read image REF and return its signature (each layer streamed and verified once)."""
    with open_source(ref, options or TransportOptions()) as src:
        layers = src.layers()
        sigs: list[LayerSignature] = []
        for i, layer in enumerate(layers):
            if progress:
                progress(f"layer {i + 1}/{len(layers)}", i, len(layers))
            with src.open_layer(layer) as stream:
                sigs.append(layer_signature(stream, layer.diff_id))
        return ImageSignature(image_ref=ref, image_id=src.image_id(), layers=tuple(sigs))


@dataclass(frozen=True)
class Ranked:
    """One candidate source image with its estimated bundle size."""

    image_ref: str
    image_id: str
    estimate: int
    target_size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image_ref,
            "image_id": self.image_id,
            "estimated_bytes": self.estimate,
            "target_size": self.target_size,
            "percent_of_target": round(100 * self.estimate / max(self.target_size, 1), 4),
        }


def rank_sources(target: ImageSignature, candidates: Sequence[ImageSignature]) -> list[Ranked]:
    """Pure: candidates ordered by estimated bundle bytes, smallest first (ties by name)."""
    ranked = [
        Ranked(c.image_ref, c.image_id, est.bytes, est.target_size)
        for c in candidates
        for est in [estimate_patch_size(target.layers, c.layers)]
    ]
    return sorted(ranked, key=lambda r: (r.estimate, r.image_ref))


def estimate_bundle(target: ImageSignature, sources: Sequence[ImageSignature]) -> int:
    """Pure: estimated bytes to rebuild TARGET from ALL of SOURCES together."""
    layers = [la for s in sources for la in s.layers]
    return estimate_patch_size(target.layers, layers).bytes
