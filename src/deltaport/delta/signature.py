"""Layer and image signatures: what an image contains, for ranking sources without its bytes.

A signature lists, per layer, its diff_id and size and, per member, path, size,
sha256 of the content (regular files), type and link target. ``estimate_patch_size``
is a pure function over signatures that predicts the bytes of the patches that
build a target from given sources, mirroring the builder's choices: layers the
device has are free, identical files cost an op, similar files (same path, or a
version-bumped / moved one) cost a fraction of their size, new files a literal.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, BinaryIO

import zstandard

from deltaport.delta.sources import rename_keys
from deltaport.errors import FormatError, UnsupportedVersionError

SIGNATURE_KIND = "deltaport.image-signature"
SIGNATURE_VERSION = 1

# Cost model (bytes per member, or per byte of content), calibrated on the per-layer
# patch bytes of bench/run.py on both corpora (bench/rank_probe.py reports how well it
# predicts; docs/patch-format.md explains each number).
HEADER_COST = 10  # per new member: its tar header, transformed and compressed
CHANGED_HEADER_COST = 2  # per changed member: its header against the source's
COPY_COST = 0.3  # per member the source has as is (headers of copies compress to ~nothing)
SAME_SIZE_RATIO = 0.001  # a changed non-code file of unchanged size: a timestamp, a version
SIMILAR_RATIO = 0.04  # delta bytes per byte of a changed file with a similar base
SIMILAR_TEXT_RATIO = 0.015  # ... of a changed text file (edits are local)
CODE_RATIO_BASE = 0.005  # a rebuilt executable of unchanged size (public S3: node 0.0047)
CODE_RATIO_PER_SHIFT = 25.0  # ... plus this × |size change| / size (corpus 2 S3: python3.11)
CODE_RATIO_MAX = 0.12
RENAMED_RATIO = 0.08  # ... when the base has another (renamed / bumped) path
LITERAL_RATIO = 0.30  # compressed bytes per byte of new content of no known kind


class ContentKind(StrEnum):
    """What a file's name says it holds: how its new bytes compress."""

    COMPRESSED = "compressed"
    CODE = "code"  # ELF executables and shared objects
    TEXT = "text"
    BYTECODE = "bytecode"
    OTHER = "other"


LITERAL_RATIOS: dict[ContentKind, float] = {
    ContentKind.COMPRESSED: 0.98,
    ContentKind.CODE: 0.24,  # xz + x86 BCJ on shared objects (both corpora: 0.23-0.24)
    ContentKind.TEXT: 0.20,
    ContentKind.BYTECODE: LITERAL_RATIO,
    ContentKind.OTHER: LITERAL_RATIO,
}
_COMPRESSED_SUFFIXES = (
    ".gz", ".tgz", ".xz", ".zst", ".bz2", ".zip", ".whl", ".jar", ".png", ".jpg", ".jpeg",
    ".gif", ".webp", ".woff", ".woff2", ".br",
)
_TEXT_SUFFIXES = (
    ".py", ".pyi", ".js", ".mjs", ".cjs", ".ts", ".json", ".md", ".txt", ".rst", ".html",
    ".css", ".xml", ".csv", ".yml", ".yaml", ".toml", ".cfg", ".ini", ".sh", ".h", ".c", ".map",
)


def content_kind(path: str) -> ContentKind:
    """Pure: the kind of content a member's path suggests (signatures carry no bytes)."""
    name = path.rsplit("/", 1)[-1].lower()
    if name.endswith(_COMPRESSED_SUFFIXES):
        return ContentKind.COMPRESSED
    if name.endswith((".so", ".node")) or ".so." in name or "/bin/" in f"/{path}":
        return ContentKind.CODE
    if name.endswith(_TEXT_SUFFIXES):
        return ContentKind.TEXT
    if name.endswith(".pyc"):
        return ContentKind.BYTECODE
    return ContentKind.OTHER


@dataclass(frozen=True)
class FileSignature:
    """One member of a layer: path, size, content sha256 (hex, regular files), type, link."""

    path: str
    size: int
    sha256: str | None
    type: str
    link: str = ""


@dataclass(frozen=True)
class LayerSignature:
    """One layer: diff_id, uncompressed size, and its members."""

    diff_id: str
    size: int
    files: tuple[FileSignature, ...]


@dataclass(frozen=True)
class ImageSignature:
    """The signature of one image: its reference, ID and layer signatures in order."""

    image_ref: str
    image_id: str
    layers: tuple[LayerSignature, ...]


@dataclass(frozen=True)
class SignatureLimits:
    """Limits on signature files read from untrusted places."""

    max_compressed: int = 256 << 20
    max_decompressed: int = 1 << 30
    max_layers: int = 1000
    max_files: int = 5_000_000


@dataclass(frozen=True)
class Estimate:
    """Estimated patch bytes to build a target image from sources, with a breakdown."""

    bytes: int
    target_size: int
    layers: tuple[dict[str, Any], ...] = field(default_factory=tuple)


class _Counting:
    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.count += len(data)
        return data


def _kind(info: tarfile.TarInfo) -> str:
    for test, name in ((info.isreg, "file"), (info.isdir, "dir"), (info.issym, "symlink"),
                       (info.islnk, "hardlink")):
        if test():
            return name
    return "other"


def _normalize(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def layer_signature(layer_tar: BinaryIO, diff_id: str) -> LayerSignature:
    """Read an uncompressed layer tar once (a stream is fine) and describe its members.

    Raises:
        FormatError: the stream is not a readable tar.
    """
    counting = _Counting(layer_tar)
    files: list[FileSignature] = []
    try:
        with tarfile.open(fileobj=counting, mode="r|") as tf:  # type: ignore[call-overload]
            for info in tf:
                digest = None
                if info.isreg():
                    h = hashlib.sha256()
                    member = tf.extractfile(info)
                    assert member is not None
                    while chunk := member.read(1 << 20):
                        h.update(chunk)
                    digest = h.hexdigest()
                files.append(FileSignature(_normalize(info.name), info.size if info.isreg() else 0,
                                           digest, _kind(info), info.linkname))
    except (tarfile.TarError, EOFError) as exc:
        raise FormatError(f"layer {diff_id} is not a readable tar: {exc}") from exc
    while counting.read(1 << 20):
        pass
    return LayerSignature(diff_id, counting.count, tuple(files))


def code_delta_ratio(base_size: int, size: int) -> float:
    """Pure: delta bytes per byte of a rebuilt executable, from how much its size moved.

    A binary rebuilt to the same size kept its layout (a patched constant, a version
    string); one that grew or shrank shifted its code, and every relative branch and
    address past the change moved with it, which a byte delta pays for.
    """
    shift = abs(size - base_size) / max(base_size, 1)
    return min(CODE_RATIO_MAX, CODE_RATIO_BASE + CODE_RATIO_PER_SHIFT * shift)


def _file_cost(f: FileSignature, index: _SourceIndex) -> float:
    """Bytes a new or changed member's content costs, by what the sources hold of it."""
    kind = content_kind(f.path)
    base_size = index.paths.get(f.path)
    if base_size is not None and kind is ContentKind.CODE:
        return CHANGED_HEADER_COST + f.size * code_delta_ratio(base_size, f.size)
    if base_size is not None and base_size == f.size:
        return CHANGED_HEADER_COST + f.size * SAME_SIZE_RATIO
    if base_size is not None:
        ratio = SIMILAR_TEXT_RATIO if kind is ContentKind.TEXT else SIMILAR_RATIO
        return CHANGED_HEADER_COST + f.size * ratio
    if any(k in index.keys for k in rename_keys(f.path)):
        return HEADER_COST + f.size * RENAMED_RATIO
    return HEADER_COST + f.size * LITERAL_RATIOS[kind]


def _layer_estimate(target: LayerSignature, index: _SourceIndex, seen: set[str]) -> int:
    """Estimated patch bytes of one layer; SEEN holds the contents earlier layers paid for
    (a file twice in an image is paid once: the literal section compresses the repeat)."""
    cost = 0.0
    for f in target.files:
        if f.sha256 is None or f.size == 0 or f.sha256 in index.hashes or f.sha256 in seen:
            cost += COPY_COST
            continue
        seen.add(f.sha256)
        cost += _file_cost(f, index)
    ceiling = target.size * LITERAL_RATIO + HEADER_COST * len(target.files)
    return int(min(cost, ceiling))


class _SourceIndex:
    def __init__(self, sources: Sequence[LayerSignature]) -> None:
        self.diff_ids = {s.diff_id for s in sources}
        self.hashes = {f.sha256 for s in sources for f in s.files if f.sha256}
        self.paths = {f.path: f.size for s in sources for f in s.files if f.sha256}
        self.keys = {k for s in sources for f in s.files if f.sha256 for k in rename_keys(f.path)}


def estimate_patch_size(
    target: Sequence[LayerSignature], sources: Sequence[LayerSignature]
) -> Estimate:
    """Estimated bytes of the patches that build the target layers from these sources."""
    index = _SourceIndex(sources)
    rows: list[dict[str, Any]] = []
    total = 0
    seen: set[str] = set()
    for layer in target:
        cost = 0 if layer.diff_id in index.diff_ids else _layer_estimate(layer, index, seen)
        rows.append({"diff_id": layer.diff_id, "size": layer.size, "estimate": cost})
        total += cost
    return Estimate(total, sum(layer.size for layer in target), tuple(rows))


def _file_to_json(f: FileSignature) -> list[Any]:
    return [f.path, f.size, f.sha256, f.type, f.link]


def dump_image_signature(sig: ImageSignature, out: BinaryIO) -> None:
    """Write an image signature: zstd-compressed, versioned JSON."""
    doc = {
        "kind": SIGNATURE_KIND,
        "version": SIGNATURE_VERSION,
        "image": {"ref": sig.image_ref, "id": sig.image_id},
        "layers": [
            {"diff_id": la.diff_id, "size": la.size, "files": [_file_to_json(f) for f in la.files]}
            for la in sig.layers
        ],
    }
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    out.write(zstandard.ZstdCompressor(level=19, threads=0).compress(raw))


def _read_bounded(f: BinaryIO, limits: SignatureLimits) -> bytes:
    blob = f.read(limits.max_compressed + 1)
    if len(blob) > limits.max_compressed:
        raise FormatError("signature file is over the size limit")
    try:
        with zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(blob) as r:
            raw = r.read(limits.max_decompressed + 1)
            while len(raw) <= limits.max_decompressed and (more := r.read(1 << 20)):
                raw += more
    except zstandard.ZstdError as exc:
        raise FormatError(f"signature file is corrupt: {exc}") from exc
    if len(raw) > limits.max_decompressed:
        raise FormatError("signature file is over the decompressed size limit")
    return bytes(raw)


def _parse_file(item: Any) -> FileSignature:
    if not isinstance(item, list) or len(item) != 5:
        raise FormatError("signature file entry is not [path, size, sha256, type, link]")
    path, size, sha, kind, link = item
    if not (isinstance(path, str) and isinstance(size, int) and size >= 0
            and (sha is None or isinstance(sha, str)) and isinstance(kind, str)
            and isinstance(link, str)):
        raise FormatError("signature file entry has wrong types")
    return FileSignature(path, size, sha, kind, link)


def load_image_signature(
    f: BinaryIO, limits: SignatureLimits = SignatureLimits()
) -> ImageSignature:
    """Read and check an image signature file.

    Raises:
        FormatError: corrupt, malformed or over a limit.
        UnsupportedVersionError: written by a newer deltaport.
    """
    try:
        doc = json.loads(_read_bounded(f, limits))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"signature file is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != SIGNATURE_KIND:
        raise FormatError("not a deltaport image signature")
    version = doc.get("version")
    if not isinstance(version, int) or version < 1:
        raise FormatError("signature file has no valid version")
    if version > SIGNATURE_VERSION:
        raise UnsupportedVersionError(f"signature version {version} is newer than this reader")
    layers_doc = doc.get("layers")
    image = doc.get("image")
    if not isinstance(layers_doc, list) or len(layers_doc) > limits.max_layers:
        raise FormatError("signature file layers missing or over the limit")
    if not isinstance(image, dict):
        raise FormatError("signature file has no image object")
    layers: list[LayerSignature] = []
    total_files = 0
    for la in layers_doc:
        if not isinstance(la, dict) or not isinstance(la.get("files"), list):
            raise FormatError("signature layer is malformed")
        total_files += len(la["files"])
        if total_files > limits.max_files:
            raise FormatError("signature file lists too many files")
        diff_id, size = la.get("diff_id"), la.get("size")
        if not isinstance(diff_id, str) or not isinstance(size, int):
            raise FormatError("signature layer has no diff_id / size")
        layers.append(LayerSignature(diff_id, size, tuple(_parse_file(x) for x in la["files"])))
    return ImageSignature(str(image.get("ref", "")), str(image.get("id", "")), tuple(layers))
