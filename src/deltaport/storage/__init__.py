"""Where bundles and desired manifests go: a folder (outbox) or S3-compatible storage."""

from pathlib import Path

from deltaport.storage.base import BundleStore, check_key
from deltaport.storage.folder import FolderStore


def open_store(store: str | None, folder: Path, *, s3_endpoint: str | None = None) -> BundleStore:
    """The store named by STORE (``s3://bucket/prefix``), else the folder store at FOLDER.

    Credentials and region for S3 come from the standard AWS environment (boto3's chain).

    Raises:
        UsageError: STORE is not an s3:// URI.
    """
    if store is None:
        return FolderStore(folder)
    from deltaport.storage.s3 import S3Config, S3Store  # needs boto3 (the hub extra)

    return S3Store(S3Config.from_uri(store, endpoint_url=s3_endpoint))


__all__ = ["BundleStore", "FolderStore", "check_key", "open_store"]
