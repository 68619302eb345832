"""Build one layer patch, and the shared patch cache every worker and hub reads.

:func:`build_patch_file` does for one target layer exactly what the bundle builder
(``delta.image.create_image_delta``) does on a cache miss: spool the candidate source
layers, copy the target layer, ``build_layer_patch`` with the default knobs, and put
the result in the local :class:`~deltaport.delta.patchcache.PatchCache` under the same
key. A bundle assembled later finds every patch there and copies it, so it has the
same bytes as one built in-process.

The shared cache is the bundle store (folder or S3): ``patches/<key>.patch`` and
``patches/<key>.json`` (size, sha256, build stats), the json written last as the
commit mark. :func:`publish` copies a local entry there, :func:`fetch` back into a
worker's local cache (checked against its sha256).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from deltaport.delta.build import build_layer_patch
from deltaport.delta.model import DeltaConfig, SourceLayer
from deltaport.delta.patchcache import PatchCache
from deltaport.delta.spool import COPY_BUFSIZE, LayerSpool
from deltaport.errors import FormatError, IntegrityError, StorageError
from deltaport.jobs.identity import PatchJob
from deltaport.oci import TransportOptions, open_source
from deltaport.storage.base import BundleStore

SHARED_PREFIX = "patches"
_CHUNK = 1 << 20


def shared_keys(key: str) -> tuple[str, str]:
    """Store keys of a shared patch and of its record."""
    return f"{SHARED_PREFIX}/{key}.patch", f"{SHARED_PREFIX}/{key}.json"


def build_patch_file(
    job: PatchJob, cache: PatchCache, work: Path, options: TransportOptions | None = None,
    config: DeltaConfig | None = None,
) -> None:
    """Build JOB's layer patch into CACHE (under ``job.key``).

    Raises:
        FormatError: the target image has no layer ``job.diff_id``.
        TransferError / NotFoundError from the registry, StorageError from the disk.
    """
    opts, cfg = options or TransportOptions(), config or DeltaConfig()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="patch-", dir=work)))
        target = stack.enter_context(open_source(job.target_ref, opts))
        layer = next((la for la in target.layers() if la.diff_id == job.diff_id), None)
        if layer is None:
            raise FormatError(f"{job.target_ref} has no layer {job.diff_id}")
        spool = LayerSpool(tmp / "sources")
        sources: dict[str, SourceLayer] = {}
        for ref in job.source_refs:
            src = stack.enter_context(open_source(ref, opts))
            for la in src.layers():
                if la.diff_id not in sources:
                    sources[la.diff_id] = SourceLayer(la.diff_id, spool.ensure(src, la))
        target_tar, patch_path = tmp / "target.tar", tmp / "layer.patch"
        with target.open_layer(layer) as stream, open(target_tar, "wb") as f:
            shutil.copyfileobj(stream, f, COPY_BUFSIZE)
        with open(patch_path, "wb") as out:
            stats = build_layer_patch(target_tar, list(sources.values()), out, config=cfg)
        cache.put(job.key, patch_path, stats.to_json())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_shared(store: BundleStore, key: str) -> bool:
    """Whether the shared cache holds the patch KEY (its record is the commit mark)."""
    return store.exists(shared_keys(key)[1])


def publish(store: BundleStore, cache: PatchCache, key: str) -> None:
    """Copy the local cache entry KEY to the shared cache, the record last.

    Raises:
        StorageError: the local entry is missing or the store cannot be written.
    """
    hit = cache.get(key)
    if hit is None:
        raise StorageError(f"patch {key} is not in the local patch cache {cache.root}")
    patch_key_, record_key = shared_keys(key)
    store.put_file(patch_key_, hit.path)
    record = {"size": hit.path.stat().st_size, "sha256": _sha256(hit.path), "stats": hit.stats}
    store.put_bytes(record_key, json.dumps(record, sort_keys=True).encode())


def fetch(store: BundleStore, cache: PatchCache, key: str, work: Path) -> bool:
    """Make the local cache hold KEY, from the shared cache if needed; False if neither has it.

    Raises:
        IntegrityError: the shared patch does not hash to its record.
        StorageError: the store or the local cache cannot be read or written.
    """
    if cache.get(key) is not None:
        return True
    if not is_shared(store, key):
        return False
    patch_key_, record_key = shared_keys(key)
    with store.open(record_key) as fh:
        record = _record(json.loads(fh.read()), key)
    with tempfile.TemporaryDirectory(prefix="fetch-", dir=work) as tmp:
        local = Path(tmp) / "patch"
        with store.open(patch_key_) as src, open(local, "wb") as out:
            shutil.copyfileobj(src, out, COPY_BUFSIZE)
        if _sha256(local) != record["sha256"] or local.stat().st_size != record["size"]:
            raise IntegrityError(f"shared patch {key} does not match its record")
        cache.put(key, local, record["stats"])
    return True


def _record(doc: Any, key: str) -> dict[str, Any]:
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("sha256"), str)
        or not isinstance(doc.get("size"), int)
        or not isinstance(doc.get("stats"), dict)
    ):
        raise FormatError(f"shared patch record {key} is malformed")
    return doc
