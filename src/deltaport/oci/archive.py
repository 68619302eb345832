"""docker-archive: the tar file `docker save` writes (and `docker load` reads).

Reading understands both the classic layout (``manifest.json`` naming
``<id>/layer.tar`` or ``<hex>.tar`` members and a ``<hex>.json`` config) and the OCI
layout newer Docker writes (``manifest.json`` naming ``blobs/sha256/<hex>`` members,
beside ``index.json``); an archive with only ``index.json`` is read as an OCI layout.
There is no registry manifest in an archive: a Docker schema 2 manifest is derived
from the config and the layer members, the way skopeo does.

Writing produces the classic layout with uncompressed layers. Tar members need their
size up front, so layers are spooled to a staging directory beside the target and the
archive is assembled into a temp file that replaces the target only on commit.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from deltaport.errors import FormatError, ImageNotFoundError, UsageError
from deltaport.oci import mediatypes as mt
from deltaport.oci.base import COPY_CHUNK, ImageDestination, ImageSource, archive_staging
from deltaport.oci.compression import Compression, detect_compression
from deltaport.oci.digest import digest_hex, new_hasher, sha256_digest
from deltaport.oci.files import Files, read_limited
from deltaport.oci.model import (
    Descriptor,
    Layer,
    build_manifest,
    choose_manifest_type,
    parse_config,
)
from deltaport.oci.options import TransportOptions
from deltaport.oci.reference import DockerName, ImageReference, parse_docker_name

MANIFEST_JSON = "manifest.json"
_BLOB_PATH_RE = re.compile(r"^blobs/(sha256)/([a-f0-9]{64})$")


@dataclass(frozen=True)
class ArchiveEntry:
    """One image of manifest.json: config member, repo tags, layer members."""

    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]


def parse_archive_manifest(data: bytes, what: str) -> list[ArchiveEntry]:
    """Check and parse a docker-archive manifest.json.

    Raises:
        FormatError: not a list of {Config, RepoTags, Layers} objects.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{what}: manifest.json is not valid JSON: {exc}") from exc
    if not isinstance(doc, list):
        raise FormatError(f"{what}: manifest.json is not a list")
    return [_parse_entry(item, what) for item in doc]


def _parse_entry(item: Any, what: str) -> ArchiveEntry:
    if not isinstance(item, dict):
        raise FormatError(f"{what}: manifest.json entry is not an object")
    config, tags, layers = item.get("Config"), item.get("RepoTags") or [], item.get("Layers")
    if not isinstance(config, str) or not isinstance(layers, list):
        raise FormatError(f"{what}: manifest.json entry lacks Config or Layers")
    if not all(isinstance(x, str) for x in [*tags, *layers]):
        raise FormatError(f"{what}: manifest.json RepoTags/Layers must be strings")
    return ArchiveEntry(config, tuple(tags), tuple(layers))


def _same_name(tag: str, wanted: DockerName) -> bool:
    try:
        return parse_docker_name(tag) == wanted
    except UsageError:
        return False


def select_entry(entries: list[ArchiveEntry], wanted: DockerName | None,
                 what: str) -> ArchiveEntry:
    """The entry tagged WANTED, or the only entry when WANTED is None.

    Raises:
        ImageNotFoundError: no such tag, or several images and none named.
    """
    if wanted is None:
        if len(entries) != 1:
            raise ImageNotFoundError(
                f"{what}: holds {len(entries)} images; name one with :NAME:TAG"
            )
        return entries[0]
    for entry in entries:
        if any(_same_name(tag, wanted) for tag in entry.repo_tags):
            return entry
    present = sorted(t for e in entries for t in e.repo_tags)
    raise ImageNotFoundError(
        f"{what}: no image named {wanted.familiar} (present: {', '.join(present) or 'none'})"
    )


class DockerArchiveSource(ImageSource):
    """Reads one image of a docker-archive through FILES (a TarFiles)."""

    def __init__(self, reference: ImageReference, options: TransportOptions,
                 files: Files) -> None:
        super().__init__(reference, options)
        self._files = files
        self._members: dict[str, str] = {}  # digest -> member name

    def close(self) -> None:
        self._files.close()

    def _entry(self) -> ArchiveEntry:
        data = read_limited(self._files, MANIFEST_JSON, self.options.max_manifest_bytes)
        entries = parse_archive_manifest(data, str(self.reference))
        return select_entry(entries, self.reference.name, str(self.reference))

    def _raw_manifest(self) -> tuple[bytes, str]:
        entry = self._entry()
        config_bytes = read_limited(self._files, self._member(entry.config),
                                    self.options.max_config_bytes)
        config_digest = sha256_digest(config_bytes)
        self._members[config_digest] = entry.config
        config = parse_config(config_bytes, f"config of {self.reference}")
        if len(config.diff_ids) != len(entry.layers):
            raise FormatError(
                f"{self.reference}: manifest.json has {len(entry.layers)} layers but the "
                f"config has {len(config.diff_ids)} diff_ids"
            )
        layers = [self._layer(name, diff_id)
                  for name, diff_id in zip(entry.layers, config.diff_ids, strict=True)]
        media_type = choose_manifest_type(layers, mt.DOCKER_MANIFEST)
        data, _ = build_manifest(config_bytes, layers, media_type)
        return data, media_type

    def _member(self, name: str) -> str:
        if not self._files.exists(name):
            raise ImageNotFoundError(f"{self.reference}: member {name} is missing from the archive")
        return name

    def _layer(self, name: str, diff_id: str) -> Layer:
        self._member(name)
        size = self._files.size(name)
        with self._files.open(name) as stream:
            compression = detect_compression(stream.read(4))
        match = _BLOB_PATH_RE.match(name)
        if match:
            digest = f"{match.group(1)}:{match.group(2)}"
        elif compression is Compression.NONE:
            digest = diff_id
        else:
            digest = self._hash_member(name)
        self._members[digest] = name
        media_type = mt.layer_media_type(compression, mt.OCI_MANIFEST)
        return Layer(Descriptor(media_type, digest, size), diff_id,
                     size if compression is Compression.NONE else None)

    def _hash_member(self, name: str) -> str:
        hasher = new_hasher()
        with self._files.open(name) as stream:
            while chunk := stream.read(COPY_CHUNK):
                hasher.update(chunk)
        return "sha256:" + hasher.hexdigest()

    def _open_raw(self, descriptor: Descriptor) -> BinaryIO:
        self.manifest_bytes()
        name = self._members.get(descriptor.digest)
        if name is None:
            raise ImageNotFoundError(
                f"{self.reference}: no blob {descriptor.digest} in the archive"
            )
        return self._files.open(name)


class DockerArchiveDestination(ImageDestination):
    """Writes docker-archive:PATH[:NAME:TAG] in the classic `docker save` layout."""

    compression = Compression.NONE

    def __init__(self, reference: ImageReference, options: TransportOptions) -> None:
        super().__init__(reference, options)
        self._target, self._staging = archive_staging(reference, ".docker-archive-")

    def accepts(self, compression: Compression) -> bool:
        return compression is Compression.NONE

    def _spool_dir(self) -> Path:
        return self._staging

    def _store_blob(self, path: Path, layer: Layer) -> Layer:
        os.replace(path, self._staging / f"{digest_hex(layer.digest)}.tar")
        return layer

    def _commit(self, config_bytes: bytes, layers: list[Layer],
                manifest_media_type: str | None, manifest_bytes: bytes | None) -> str:
        config_name = f"{digest_hex(sha256_digest(config_bytes))}.json"
        layer_names = [f"{digest_hex(layer.digest)}.tar" for layer in layers]
        name = self.reference.name
        entry = {
            "Config": config_name,
            "RepoTags": [name.familiar] if name is not None else [],
            "Layers": layer_names,
        }
        tmp = self._staging / "archive.tar"
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for layer_name in dict.fromkeys(layer_names):
                _add_file(tar, layer_name, self._staging / layer_name)
            _add_bytes(tar, config_name, config_bytes)
            _add_bytes(tar, MANIFEST_JSON, json.dumps([entry]).encode())
        os.replace(tmp, self._target)
        media_type = choose_manifest_type(layers, mt.DOCKER_MANIFEST)
        data, _ = build_manifest(config_bytes, layers, media_type)
        return sha256_digest(data)

    def _finalize(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)


def _member_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    return info


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    with open(path, "rb") as stream:
        tar.addfile(_member_info(name, path.stat().st_size), stream)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_member_info(name, len(data)), io.BytesIO(data))

