"""Independent byte-exact check of a rebuilt image, without deltaport's own code.

The rebuilt image (a docker-archive tar or an OCI layout directory) is exact when its
config blob hashes to the target's config digest (the image ID) and each of its layers,
uncompressed, hashes to the target's diff_id at the same position. Compressed layers
(gzip, zstd) are decompressed while hashing; nothing is held whole in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import zstandard

JSON_LIMIT = 4 << 20  # bytes; manifests, indexes and configs are a few KB
CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class VerifyError(Exception):
    """The rebuilt image cannot be read at all (missing file, bad JSON, unknown tag)."""


@dataclass(frozen=True)
class Verdict:
    """Result of a check: exact, or the list of what differs (each naming the layer)."""

    exact: bool
    problems: tuple[str, ...]

    def summary(self) -> str:
        return "byte-exact" if self.exact else "; ".join(self.problems)


def compare(
    config_digest: str, layer_digests: Sequence[str], want_config: str, want_diff_ids: Sequence[str]
) -> Verdict:
    """Pure comparison of what was rebuilt against the target's image ID and diff_ids."""
    problems = []
    if config_digest != want_config:
        problems.append(f"image ID {config_digest[:19]} != target {want_config[:19]}")
    if len(layer_digests) != len(want_diff_ids):
        problems.append(f"{len(layer_digests)} layers, target has {len(want_diff_ids)}")
    for i, (got, want) in enumerate(zip(layer_digests, want_diff_ids, strict=False)):
        if got != want:
            problems.append(f"layer {i} diff_id {got[:19]} != target {want[:19]}")
    return Verdict(not problems, tuple(problems))


def hash_stream(raw: io.BufferedReader) -> str:
    """sha256 of a stream's uncompressed content (gzip and zstd are decompressed)."""
    head = raw.peek(4)[:4]
    rest: io.BufferedIOBase | IO[bytes] = raw
    if head[:2] == GZIP_MAGIC:
        rest = gzip.GzipFile(fileobj=raw, mode="rb")
    elif head == ZSTD_MAGIC:
        rest = zstandard.ZstdDecompressor().stream_reader(raw)
    sha = hashlib.sha256()
    while chunk := rest.read(CHUNK):
        sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def _load_json(data: bytes, what: str) -> Any:
    if len(data) > JSON_LIMIT:
        raise VerifyError(f"{what} is over {JSON_LIMIT} bytes")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise VerifyError(f"{what} is not JSON: {exc}") from exc


def digests_docker_archive(path: Path) -> tuple[str, list[str]]:
    """(config digest, uncompressed layer digests) of a docker-archive tar."""
    try:
        with tarfile.open(path, "r:") as tar:
            manifest = _load_json(_member_bytes(tar, "manifest.json"), "manifest.json")
            if not isinstance(manifest, list) or len(manifest) != 1:
                raise VerifyError("manifest.json must list exactly one image")
            entry = manifest[0]
            config = _member_bytes(tar, entry["Config"])
            layers = [hash_stream(_member_stream(tar, name)) for name in entry["Layers"]]
    except (OSError, tarfile.TarError, KeyError, TypeError) as exc:
        raise VerifyError(f"{path}: cannot read docker-archive: {exc!r}") from exc
    return "sha256:" + hashlib.sha256(config).hexdigest(), layers


def _member_stream(tar: tarfile.TarFile, name: str) -> io.BufferedReader:
    stream = tar.extractfile(name)
    if not isinstance(stream, io.BufferedReader):
        raise VerifyError(f"archive member {name} is not a file")
    return stream


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    return _member_stream(tar, name).read(JSON_LIMIT + 1)


def _blob(layout: Path, digest: str) -> Path:
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or not hexd.isalnum():
        raise VerifyError(f"unsupported blob digest {digest!r}")
    return layout / "blobs" / algo / hexd


def _read_blob(layout: Path, digest: str, what: str) -> bytes:
    path = _blob(layout, digest)
    if not path.is_file():
        raise VerifyError(f"{what} blob {digest} missing in {layout}")
    with path.open("rb") as f:
        return f.read(JSON_LIMIT + 1)


def digests_oci_layout(layout: Path, tag: str) -> tuple[str, list[str]]:
    """(config digest, uncompressed layer digests) of image ``tag`` in an OCI layout."""
    index = _load_json((layout / "index.json").read_bytes(), "index.json")
    matches = [
        m for m in index.get("manifests", [])
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    ]
    if not matches:
        raise VerifyError(f"{layout}: no image tagged {tag!r}")
    manifest = _load_json(_read_blob(layout, matches[0]["digest"], "manifest"), "manifest")
    config = _read_blob(layout, manifest["config"]["digest"], "config")
    layers = []
    for desc in manifest["layers"]:
        with _blob(layout, desc["digest"]).open("rb") as f:
            layers.append(hash_stream(f))
    return "sha256:" + hashlib.sha256(config).hexdigest(), layers


def verify_image(
    dest: str, want_config: str, want_diff_ids: Sequence[str]
) -> Verdict:
    """Check a rebuilt image named like deltaport's --to (docker-archive:P or oci:DIR:TAG)."""
    transport, _, rest = dest.partition(":")
    try:
        if transport == "docker-archive":
            got = digests_docker_archive(Path(rest.split(":")[0]))
        elif transport == "oci":
            layout, _, tag = rest.partition(":")
            got = digests_oci_layout(Path(layout), tag)
        else:
            raise VerifyError(f"cannot verify transport {transport!r}")
    except (VerifyError, OSError, KeyError, TypeError) as exc:
        return Verdict(False, (f"unreadable rebuilt image: {exc}",))
    return compare(got[0], got[1], want_config, want_diff_ids)
