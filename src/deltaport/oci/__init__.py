"""OCI image I/O without a Docker daemon: references, sources, destinations, copy.

Transports (the names skopeo uses): ``docker-archive:``, ``oci:``, ``oci-archive:``,
``docker://``. Every blob is verified against its digest while it streams and every
uncompressed layer against its diff_id; destinations write the manifest last and
leave nothing partial behind when not committed.
"""

from deltaport.oci.base import ImageDestination, ImageSource, LayerWriter, uncompressed_layer
from deltaport.oci.compression import Compression, detect_compression
from deltaport.oci.copy import CopyProgress, CopyResult, copy_image
from deltaport.oci.digest import sha256_digest
from deltaport.oci.inspect import inspect_image
from deltaport.oci.model import Descriptor, ImageConfig, Layer, Platform
from deltaport.oci.options import TransportOptions
from deltaport.oci.reference import DockerName, ImageReference, Transport, parse_reference
from deltaport.oci.transports import open_destination, open_source

__all__ = [
    "Compression",
    "CopyProgress",
    "CopyResult",
    "Descriptor",
    "DockerName",
    "ImageConfig",
    "ImageDestination",
    "ImageReference",
    "ImageSource",
    "Layer",
    "LayerWriter",
    "Platform",
    "Transport",
    "TransportOptions",
    "copy_image",
    "detect_compression",
    "inspect_image",
    "open_destination",
    "open_source",
    "parse_reference",
    "sha256_digest",
    "uncompressed_layer",
]
