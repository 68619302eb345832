"""The outer layout of a layer patch: preamble, meta document, sections.

Pure checking of the meta document lives here; see docs/patch-format.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from deltaport.delta.protocol import CODECS, FORMAT_VERSION, MAGIC, PREAMBLE_SIZE, SECTION_NAMES
from deltaport.errors import FormatError, IntegrityError, TruncatedError, UnsupportedVersionError

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-f]*$")


@dataclass(frozen=True)
class Section:
    """One section: where it lies (after the meta document), its codec and digest."""

    name: str
    codec: str
    length: int
    offset: int = 0  # absolute offset in the patch, filled when read


@dataclass(frozen=True)
class PatchMeta:
    """The meta document of a layer patch."""

    mode: str
    target_diff_id: str
    target_size: int
    sources: tuple[tuple[str, int], ...]  # (diff_id, size) in op index order
    mtime_field: bytes
    zlib_version: str | None
    sections: tuple[Section, ...]
    literal_dict: tuple[int, int, int] | None = None  # (source, offset, length) in its tar

    def to_json(self) -> bytes:
        """Canonical JSON bytes of the meta document."""
        doc = {
            "mode": self.mode,
            "target": {"diff_id": self.target_diff_id, "size": self.target_size},
            "sources": [{"diff_id": d, "size": s} for d, s in self.sources],
            "mtime_field": self.mtime_field.hex(),
            "zlib_version": self.zlib_version,
            "literal_dict": None if self.literal_dict is None else list(self.literal_dict),
            "sections": [[s.name, s.codec, s.length] for s in self.sections],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def section(self, name: str) -> Section | None:
        """The section called name, if the patch has one."""
        for s in self.sections:
            if s.name == name:
                return s
        return None


def encode_meta(meta: PatchMeta) -> bytes:
    """The meta document as stored: zstd-compressed canonical JSON."""
    return zstandard.ZstdCompressor(level=19).compress(meta.to_json())


def write_preamble(out: BinaryIO, meta_blob: bytes, digest: bytes) -> None:
    """Magic, version, meta length, digest of everything after the preamble, meta."""
    out.write(MAGIC + struct.pack(">HI", FORMAT_VERSION, len(meta_blob)))
    out.write(digest)
    out.write(meta_blob)


def _req(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise FormatError(f"patch meta: {key!r} missing or not a {kind.__name__}")
    return value


def _nonneg(doc: dict[str, Any], key: str) -> int:
    value: int = _req(doc, key, int)
    if value < 0:
        raise FormatError(f"patch meta: {key!r} is negative")
    return value


def _digest(doc: dict[str, Any], key: str) -> str:
    value: str = _req(doc, key, str)
    if not _DIGEST.match(value):
        raise FormatError(f"patch meta: {key!r} is not a sha256 digest")
    return value


def _parse_sections(items: list[Any], base: int) -> tuple[Section, ...]:
    sections: list[Section] = []
    offset = base
    for item in items:
        if not isinstance(item, list) or len(item) != 3:
            raise FormatError("patch meta: section is not [name, codec, length]")
        name, codec, length = item
        if name not in SECTION_NAMES or codec not in CODECS:
            raise FormatError(f"patch meta: unknown section {name!r} / codec {codec!r}")
        if any(s.name == name for s in sections):
            raise FormatError(f"patch meta: section {name!r} twice")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise FormatError("patch meta: bad section length")
        sections.append(Section(name, codec, length, offset))
        offset += length
    return tuple(sections)


def parse_meta(raw: bytes, base: int, max_sources: int) -> PatchMeta:
    """Check and parse the meta document; base is the offset of the first section."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"patch meta is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise FormatError("patch meta is not an object")
    target = _req(doc, "target", dict)
    sources = _req(doc, "sources", list)
    if len(sources) > max_sources:
        raise FormatError(f"patch names {len(sources)} sources, over the limit {max_sources}")
    parsed_sources = []
    for item in sources:
        if not isinstance(item, dict):
            raise FormatError("patch meta: source is not an object")
        parsed_sources.append((_digest(item, "diff_id"), _nonneg(item, "size")))
    mtime_hex = _req(doc, "mtime_field", str)
    if len(mtime_hex) != 24 or not _HEX.match(mtime_hex):
        raise FormatError("patch meta: bad mtime_field")
    zlib_version = doc.get("zlib_version")
    if zlib_version is not None and not isinstance(zlib_version, str):
        raise FormatError("patch meta: zlib_version is not a string")
    mode = _req(doc, "mode", str)
    literal_dict = _parse_literal_dict(doc.get("literal_dict"), len(parsed_sources))
    return PatchMeta(
        mode=mode,
        target_diff_id=_digest(target, "diff_id"),
        target_size=_nonneg(target, "size"),
        sources=tuple(parsed_sources),
        mtime_field=bytes.fromhex(mtime_hex),
        zlib_version=zlib_version,
        sections=_parse_sections(_req(doc, "sections", list), base),
        literal_dict=literal_dict,
    )


def _parse_literal_dict(value: Any, n_sources: int) -> tuple[int, int, int] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        or value[0] >= n_sources
    ):
        raise FormatError("patch meta: bad literal_dict")
    return value[0], value[1], value[2]


@dataclass(frozen=True)
class PatchHead:
    """The checked preamble and meta document, and where the sections end."""

    meta: PatchMeta
    digest: bytes
    end: int


def _decompress_meta(blob: bytes, max_meta_size: int) -> bytes:
    try:
        dctx = zstandard.ZstdDecompressor(max_window_size=1 << 20)
        with dctx.stream_reader(blob) as reader:
            raw = reader.read(max_meta_size + 1)
    except zstandard.ZstdError as exc:
        raise FormatError(f"patch meta is corrupt: {exc}") from exc
    if len(raw) > max_meta_size:
        raise FormatError(f"patch meta is over the limit of {max_meta_size} bytes")
    return bytes(raw)


def read_head(patch: BinaryIO, max_meta_size: int, max_sources: int) -> PatchHead:
    """Read and check the preamble and meta document from the start of a patch.

    Raises:
        FormatError: not a layer patch, or a malformed meta document.
        UnsupportedVersionError: written by a newer deltaport.
        TruncatedError: the patch ends inside the preamble or meta.
    """
    patch.seek(0)
    pre = patch.read(PREAMBLE_SIZE)
    if len(pre) < 4 or pre[:4] != MAGIC:
        raise FormatError("not a deltaport layer patch (bad magic)")
    if len(pre) < PREAMBLE_SIZE:
        raise TruncatedError("layer patch ends inside its preamble")
    version, meta_len = struct.unpack(">HI", pre[4:10])
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"layer patch format version {version} is newer than this reader ({FORMAT_VERSION})"
        )
    if version < 1:
        raise FormatError(f"bad layer patch format version {version}")
    if meta_len > max_meta_size:
        raise FormatError(f"patch meta of {meta_len} bytes is over the limit {max_meta_size}")
    blob = patch.read(meta_len)
    if len(blob) != meta_len:
        raise TruncatedError("layer patch ends inside its meta document")
    base = PREAMBLE_SIZE + meta_len
    meta = parse_meta(_decompress_meta(blob, max_meta_size), base, max_sources)
    end = meta.sections[-1].offset + meta.sections[-1].length if meta.sections else base
    return PatchHead(meta, pre[10:42], end)


def verify_patch(patch: BinaryIO, head: PatchHead) -> None:
    """Hash the meta and every section before any is decoded: corruption fails here.

    Raises:
        TruncatedError: the patch is shorter than its sections say.
        FormatError: bytes follow the last section.
        IntegrityError: the digest does not match.
    """
    patch.seek(PREAMBLE_SIZE)
    digest = hashlib.sha256()
    left = head.end - PREAMBLE_SIZE
    while left:
        chunk = patch.read(min(left, 1 << 20))
        if not chunk:
            raise TruncatedError("layer patch ends inside its sections")
        digest.update(chunk)
        left -= len(chunk)
    if patch.read(1):
        raise FormatError("layer patch has bytes after its last section")
    if digest.digest() != head.digest:
        raise IntegrityError("layer patch does not match its digest (corrupt)")
