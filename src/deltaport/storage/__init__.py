"""Where bundles and desired manifests go: a folder (outbox) now, S3-compatible later."""

from deltaport.storage.base import BundleStore, check_key
from deltaport.storage.folder import FolderStore

__all__ = ["BundleStore", "FolderStore", "check_key"]
