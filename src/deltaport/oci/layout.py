"""OCI image layouts: ``oci:DIR[:TAG]`` (a directory) and ``oci-archive:PATH[:TAG]`` (a tar).

A layout holds ``oci-layout``, ``index.json`` and ``blobs/<algo>/<hex>``. The tag is the
``org.opencontainers.image.ref.name`` annotation of an index.json entry. Writing puts
blobs first and index.json last (atomically); an aborted write removes the blobs it
added, and an aborted oci-archive write leaves no file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import BinaryIO

from deltaport.errors import FormatError, ImageNotFoundError, StorageError
from deltaport.fsutil import write_atomic
from deltaport.oci import mediatypes as mt
from deltaport.oci.base import ImageDestination, ImageSource, archive_staging, manifest_matches
from deltaport.oci.digest import sha256_digest, verify_bytes
from deltaport.oci.files import DirFiles, Files, TarFiles, read_limited
from deltaport.oci.model import (
    Descriptor,
    Layer,
    build_manifest,
    load_json,
    manifest_media_type,
    parse_index,
    select_platform,
)
from deltaport.oci.options import TransportOptions
from deltaport.oci.reference import ImageReference, Transport

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = b'{"imageLayoutVersion": "1.0.0"}'
MAX_INDEX_DEPTH = 4


def blob_name(digest: str) -> str:
    """The path of a blob inside a layout."""
    algorithm, hexpart = digest.split(":", 1)
    return f"blobs/{algorithm}/{hexpart}"


class LayoutSource(ImageSource):
    """Reads one image from an OCI layout held in FILES (a directory or a tar)."""

    def __init__(self, reference: ImageReference, options: TransportOptions, files: Files,
                 tag: str | None) -> None:
        super().__init__(reference, options)
        self._files = files
        self._tag = tag

    def close(self) -> None:
        self._files.close()

    def _read_json_blob(self, desc: Descriptor, what: str) -> bytes:
        limit = self.options.max_manifest_bytes
        if desc.size > limit:
            raise FormatError(f"{what}: larger than {limit} bytes")
        name = blob_name(desc.digest)
        if not self._files.exists(name):
            raise ImageNotFoundError(f"{what}: blob {desc.digest} is missing from {self.reference}")
        return verify_bytes(read_limited(self._files, name, limit), desc.digest, what)

    def _top_entry(self) -> Descriptor:
        desc = self._files.description
        if not self._files.exists("index.json"):
            raise ImageNotFoundError(f"{desc}: no index.json (not an OCI layout)")
        data = read_limited(self._files, "index.json", self.options.max_manifest_bytes)
        entries = parse_index(data, mt.OCI_INDEX, f"{desc} index.json").manifests
        if self._tag is not None:
            found = [e for e in entries if e.annotation(REF_NAME) == self._tag]
            if not found:
                tags = sorted(t for e in entries if (t := e.annotation(REF_NAME)))
                raise ImageNotFoundError(
                    f"{desc}: no image tagged {self._tag!r} (tags: {', '.join(tags) or 'none'})"
                )
            return found[-1]
        if len(entries) != 1:
            raise ImageNotFoundError(
                f"{desc}: holds {len(entries)} images; name one with :TAG"
            )
        return entries[0]

    def _raw_manifest(self) -> tuple[bytes, str]:
        entry = self._top_entry()
        for _ in range(MAX_INDEX_DEPTH):
            what = f"manifest {entry.digest} in {self.reference}"
            data = self._read_json_blob(entry, what)
            media_type = manifest_media_type(data, entry.media_type, what)
            if media_type not in mt.INDEXES:
                return data, media_type
            index = parse_index(data, media_type, what)
            entry = select_platform(index, self.options.platform, f"image {self.reference}")
        raise FormatError(f"{self.reference}: indexes nested deeper than {MAX_INDEX_DEPTH}")

    def _open_raw(self, descriptor: Descriptor) -> BinaryIO:
        name = blob_name(descriptor.digest)
        if not self._files.exists(name):
            raise ImageNotFoundError(
                f"{self.reference}: blob {descriptor.digest} is missing from the layout"
            )
        return self._files.open(name)


def open_layout_source(reference: ImageReference, options: TransportOptions) -> LayoutSource:
    """Open oci:DIR or oci-archive:PATH for reading."""
    assert reference.path is not None
    if reference.transport is Transport.OCI:
        if not reference.path.is_dir():
            raise ImageNotFoundError(f"{reference}: no such directory")
        files: Files = DirFiles(reference.path)
    else:
        files = TarFiles(reference.path, str(reference))
    return LayoutSource(reference, options, files, reference.tag)


class LayoutWriter:
    """Blobs and index of an OCI layout directory being written; undo on abort."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._created_root = not root.exists()
        self._new_blobs: list[Path] = []
        self._created_dirs: list[Path] = []
        if root.exists() and not root.is_dir():
            raise StorageError(f"{root} exists and is not a directory")
        if root.exists() and any(root.iterdir()) and not (root / LAYOUT_FILE).exists():
            raise FormatError(f"{root} is not empty and is not an OCI layout")
        self._mkdir(root)
        self._mkdir(root / "blobs")
        self._mkdir(root / "blobs" / "sha256")

    def _mkdir(self, path: Path) -> None:
        if not path.exists():
            path.mkdir(parents=True)
            self._created_dirs.append(path)

    @property
    def blob_dir(self) -> Path:
        return self.root / "blobs" / "sha256"

    def has(self, digest: str) -> bool:
        return (self.root / blob_name(digest)).is_file()

    def add_file(self, path: Path, digest: str) -> None:
        """Move the verified file PATH into place as blob DIGEST."""
        target = self.root / blob_name(digest)
        if target.exists():
            path.unlink(missing_ok=True)
            return
        os.replace(path, target)
        self._new_blobs.append(target)

    def add_bytes(self, data: bytes) -> Descriptor:
        digest = sha256_digest(data)
        target = self.root / blob_name(digest)
        if not target.exists():
            write_atomic(target, data)
            self._new_blobs.append(target)
        return Descriptor("", digest, len(data))

    def set_index_entry(self, entry: Descriptor, tag: str | None) -> None:
        """Write index.json (atomically) with ENTRY, replacing any entry with that tag."""
        index_path = self.root / "index.json"
        entries: list[dict[str, object]] = []
        if index_path.exists():
            doc = load_json(index_path.read_bytes(), f"{index_path}")
            raw = doc.get("manifests")
            entries = [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
            if tag is not None:
                entries = [e for e in entries if _entry_tag(e) != tag]
        entries.append(entry.to_json())
        doc_out = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
        if not (self.root / LAYOUT_FILE).exists():
            write_atomic(self.root / LAYOUT_FILE, LAYOUT_VERSION)
        write_atomic(index_path, json.dumps(doc_out, indent=2).encode())

    def abort(self) -> None:
        for blob in self._new_blobs:
            blob.unlink(missing_ok=True)
        if self._created_root:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        for directory in reversed(self._created_dirs):
            with contextlib.suppress(OSError):
                directory.rmdir()


def _entry_tag(entry: dict[str, object]) -> str | None:
    annotations = entry.get("annotations")
    if isinstance(annotations, dict):
        value = annotations.get(REF_NAME)
        return value if isinstance(value, str) else None
    return None


def write_image(writer: LayoutWriter, config_bytes: bytes, layers: list[Layer], tag: str | None,
                manifest_bytes: bytes | None, manifest_media_type: str | None) -> str:
    """Write config, manifest and the index entry (last); return the manifest digest."""
    writer.add_bytes(config_bytes)
    if manifest_bytes is not None and manifest_media_type == mt.OCI_MANIFEST and (
        manifest_matches(manifest_bytes, mt.OCI_MANIFEST, config_bytes, layers)
    ):
        data = manifest_bytes
    else:
        data, _ = build_manifest(config_bytes, layers, mt.OCI_MANIFEST)
    desc = writer.add_bytes(data)
    annotations = ((REF_NAME, tag),) if tag else ()
    entry = Descriptor(mt.OCI_MANIFEST, desc.digest, desc.size, annotations)
    writer.set_index_entry(entry, tag)
    return desc.digest


class LayoutDestination(ImageDestination):
    """Writes an image into oci:DIR[:TAG]."""

    def __init__(self, reference: ImageReference, options: TransportOptions) -> None:
        super().__init__(reference, options)
        assert reference.path is not None
        self._writer = LayoutWriter(reference.path)

    def _spool_dir(self) -> Path:
        return self._writer.blob_dir

    def _store_blob(self, path: Path, layer: Layer) -> Layer:
        self._writer.add_file(path, layer.digest)
        return layer

    def _blob_present(self, layer: Layer) -> bool:
        return self._writer.has(layer.digest)

    def _commit(self, config_bytes: bytes, layers: list[Layer],
                manifest_media_type: str | None, manifest_bytes: bytes | None) -> str:
        return write_image(self._writer, config_bytes, layers, self.reference.tag,
                           manifest_bytes, manifest_media_type)

    def _abort(self) -> None:
        self._writer.abort()


class OciArchiveDestination(ImageDestination):
    """Writes oci-archive:PATH[:TAG]: a layout in a staging dir, tarred on commit."""

    def __init__(self, reference: ImageReference, options: TransportOptions) -> None:
        super().__init__(reference, options)
        self._target, self._staging = archive_staging(reference, ".oci-archive-")
        self._writer = LayoutWriter(self._staging / "layout")

    def _spool_dir(self) -> Path:
        return self._writer.blob_dir

    def _store_blob(self, path: Path, layer: Layer) -> Layer:
        self._writer.add_file(path, layer.digest)
        return layer

    def _commit(self, config_bytes: bytes, layers: list[Layer],
                manifest_media_type: str | None, manifest_bytes: bytes | None) -> str:
        digest = write_image(self._writer, config_bytes, layers, self.reference.tag,
                             manifest_bytes, manifest_media_type)
        tmp = self._staging / "archive.tar"
        write_layout_tar(self._writer.root, tmp)
        os.replace(tmp, self._target)
        return digest

    def _finalize(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)


def write_layout_tar(root: Path, out_path: Path) -> None:
    """Tar the layout ROOT into OUT_PATH: oci-layout, index.json, then blobs."""
    with tarfile.open(out_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in (LAYOUT_FILE, "index.json"):
            tar.add(root / name, arcname=name, filter=_normalize_member)
        tar.add(root / "blobs", arcname="blobs", recursive=False, filter=_normalize_member)
        for algo_dir in sorted((root / "blobs").iterdir()):
            tar.add(algo_dir, arcname=f"blobs/{algo_dir.name}", recursive=False,
                    filter=_normalize_member)
            for blob in sorted(algo_dir.iterdir()):
                tar.add(blob, arcname=f"blobs/{algo_dir.name}/{blob.name}",
                        filter=_normalize_member)


def _normalize_member(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() else 0o644
    return info
