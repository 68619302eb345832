"""Registry HTTP API v2: client, authentication, uploads, and the docker:// transport."""

from deltaport.oci.registry.client import RegistryClient, candidate_base_urls, is_local_host
from deltaport.oci.registry.image import RegistryDestination, RegistrySource
from deltaport.oci.registry.upload import BlobUpload, UploadStats, mount_blob

__all__ = [
    "BlobUpload",
    "RegistryClient",
    "RegistryDestination",
    "RegistrySource",
    "UploadStats",
    "candidate_base_urls",
    "is_local_host",
    "mount_blob",
]
