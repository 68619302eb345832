"""Layer patches already built, kept in a folder so each distinct patch is built once.

A fleet deploys the same layers again and again: a base layer shared by ten images,
the first-image bundle of a second device group, a bundle rebuilt after a failure.
A patch depends only on the target layer, the candidate source layers and the
builder's knobs, so it is cached under the hash of exactly those (plus the patch
format and deltaport version). The hub keeps the cache in its data dir; ``delta
create --patch-cache DIR`` uses one from the CLI.

Entries are ``<key>.patch`` plus ``<key>.json`` (size, sha256 and build stats), the
json written last as the commit mark; a hit is re-hashed before use, a damaged entry
is dropped and rebuilt. The folder is trimmed to ``max_bytes``, least recently used
first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltaport.delta.model import DeltaConfig
from deltaport.delta.protocol import FORMAT_VERSION
from deltaport.errors import StorageError
from deltaport.fsutil import write_atomic

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20 << 30
_HASH_CHUNK = 1 << 20


def _engine_version() -> str:
    try:
        return importlib.metadata.version("deltaport")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def patch_key(target_diff_id: str, source_diff_ids: Iterable[str], config: DeltaConfig) -> str:
    """The cache key of the patch for this target layer, candidate sources and knobs (pure)."""
    doc = {
        "patch_format": FORMAT_VERSION,
        "deltaport": _engine_version(),
        "config": dataclasses.asdict(config),
        "target": target_diff_id,
        "sources": sorted(set(source_diff_ids)),
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class CachedPatch:
    """A cache hit: the patch file (read it, do not keep it) and its build stats."""

    path: Path
    stats: dict[str, Any]


@dataclass(frozen=True)
class PatchCache:
    """A folder of built layer patches, bounded to ``max_bytes``."""

    root: Path
    max_bytes: int = DEFAULT_MAX_BYTES

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.patch", self.root / f"{key}.json"

    def get(self, key: str) -> CachedPatch | None:
        """The cached patch for ``key`` if present and intact (else None; damage is dropped)."""
        patch, meta = self._paths(key)
        try:
            doc = json.loads(meta.read_bytes())
            if (
                not isinstance(doc, dict)
                or patch.stat().st_size != doc.get("size")
                or _file_sha256(patch) != doc.get("sha256")
                or not isinstance(doc.get("stats"), dict)
            ):
                raise ValueError("size or digest differs from its record")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("patch cache entry %s is damaged (%s): rebuilding it", key, exc)
            self._drop(key)
            return None
        with contextlib.suppress(OSError):
            os.utime(meta)  # most recently used
        return CachedPatch(patch, doc["stats"])

    def put(self, key: str, patch_path: Path, stats: dict[str, Any]) -> None:
        """Store a copy of ``patch_path`` under ``key``, then trim the folder.

        Raises:
            StorageError: the cache folder cannot be written (disk full, read-only...).
        """
        patch, meta = self._paths(key)
        digest = hashlib.sha256()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.root)
            try:
                with os.fdopen(fd, "wb") as out, open(patch_path, "rb") as src:
                    while chunk := src.read(_HASH_CHUNK):  # copied and hashed in one pass
                        digest.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                    size = out.tell()
                os.replace(tmp, patch)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise StorageError(f"cannot write patch cache {self.root}: {exc}") from exc
        record = {"size": size, "sha256": digest.hexdigest(), "stats": stats}
        write_atomic(meta, json.dumps(record, sort_keys=True).encode())
        self.trim()

    def _drop(self, key: str) -> None:
        for path in self._paths(key):
            with contextlib.suppress(OSError):
                path.unlink()

    def _drop_orphans(self, recorded: set[str]) -> None:
        """Patch files left without a record by a crash mid-``put`` (after an hour's grace)."""
        for patch in self.root.glob("*.patch"):
            with contextlib.suppress(OSError):
                if patch.stem not in recorded and time.time() - patch.stat().st_mtime > 3600:
                    patch.unlink()

    def trim(self) -> None:
        """Delete least recently used entries until the folder holds at most ``max_bytes``."""
        entries: list[tuple[float, int, str]] = []
        for meta in self.root.glob("*.json"):
            key = meta.stem
            try:
                used = meta.stat().st_mtime
                size = (self.root / f"{key}.patch").stat().st_size
            except OSError:
                self._drop(key)  # a half-stored or half-dropped entry
                continue
            entries.append((used, size, key))
        self._drop_orphans({key for _, _, key in entries})
        total = sum(size for _, size, _ in entries)
        for _, size, key in sorted(entries):
            if total <= self.max_bytes:
                break
            self._drop(key)
            total -= size
