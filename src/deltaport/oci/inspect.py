"""inspect_image: what `deltaport image inspect` prints, as a JSON-ready dict."""

from __future__ import annotations

from typing import Any

from deltaport.oci.base import COPY_CHUNK, ImageSource
from deltaport.oci.model import Layer
from deltaport.oci.options import TransportOptions
from deltaport.oci.reference import ImageReference
from deltaport.oci.transports import open_source


def inspect_image(ref: str | ImageReference, options: TransportOptions | None = None, *,
                  verify: bool = True) -> dict[str, Any]:
    """Describe an image: reference, image ID, manifest digest, platform, layers, totals.

    With VERIFY (the default) every layer is read, checked against its digest and
    diff_id, and its uncompressed size measured; without it, uncompressed sizes of
    compressed layers are null and only manifest and config are read.

    Raises:
        IntegrityError: a layer does not match its digest or diff_id (VERIFY only).
    """
    with open_source(ref, options) as source:
        config = source.config()
        _, media_type = source.manifest_bytes()
        layers = [_describe_layer(source, layer, verify) for layer in source.layers()]
        sizes = [entry["uncompressed_size"] for entry in layers]
        return {
            "reference": str(source.reference),
            "image_id": source.image_id(),
            "manifest_digest": source.manifest_digest(),
            "manifest_media_type": media_type,
            "architecture": config.architecture,
            "os": config.os,
            **({"variant": config.variant} if config.variant else {}),
            "created": config.raw.get("created"),
            "layers": layers,
            "layer_count": len(layers),
            "total_size": sum(entry["size"] for entry in layers),
            "total_uncompressed_size": None if None in sizes else sum(sizes),
            "verified": verify,
        }


def _describe_layer(source: ImageSource, layer: Layer, verify: bool) -> dict[str, Any]:
    size = layer.uncompressed_size
    if verify:
        size = _measure(source, layer)
    return {
        "digest": layer.digest,
        "diff_id": layer.diff_id,
        "size": layer.size,
        "uncompressed_size": size,
        "media_type": layer.media_type,
        "compression": layer.compression.value,
    }


def _measure(source: ImageSource, layer: Layer) -> int:
    total = 0
    with source.open_layer(layer) as tar:
        while chunk := tar.read(COPY_CHUNK):
            total += len(chunk)
    return total
