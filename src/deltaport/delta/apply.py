"""Streaming application of a layer patch: rebuilds the exact target tar.

Memory does not grow with the layer: sources are read by seek/read from their tar
files, sections are decoded as streams, and only one hdiff segment, solid group or
gzip member (each bounded by ApplyLimits) is held at a time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import hdiffpatch
import zstandard

from deltaport.delta import protocol as p
from deltaport.delta.container import PatchMeta, read_head, verify_patch
from deltaport.delta.gzipcodec import gunzip_exact, gzip_member
from deltaport.delta.headers import HeaderReader, HeaderStream
from deltaport.delta.model import ApplyLimits, PatchRequirements
from deltaport.delta.pinned_zlib import VERSION as PINNED_DEFLATE
from deltaport.delta.pinned_zlib import require as require_pinned_deflate
from deltaport.delta.protocol import Op
from deltaport.delta.streams import CHUNK, BufferedDecoder, HashingSink, SectionReader, open_decoder
from deltaport.delta.tarscan import (
    TarEntry,
    TarLayout,
    header_chunk_info,
    round_up,
    scan_tar,
    transform_headers,
)
from deltaport.errors import FormatError, IntegrityError, MissingSourceError, TruncatedError

_HDIFF_MAGIC = b"HDIFF13&"


def read_patch_requirements(
    patch: BinaryIO, *, limits: ApplyLimits = ApplyLimits()
) -> PatchRequirements:
    """Target diff_id and size, and the source diff_ids a patch needs (reads only the meta)."""
    meta = read_head(patch, limits.max_meta_size, limits.max_sources).meta
    return PatchRequirements(
        format_version=p.FORMAT_VERSION,
        target_diff_id=meta.target_diff_id,
        target_size=meta.target_size,
        source_diff_ids=tuple(d for d, _ in meta.sources),
    )


class _Source:
    """One source layer tar on disk, scanned on first use."""

    def __init__(self, diff_id: str, path: Path) -> None:
        self.diff_id = diff_id
        self.file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by the applier
        self.size = os.fstat(self.file.fileno()).st_size
        self._layout: TarLayout | None = None
        self._by_path: dict[str, TarEntry] = {}
        self._files: list[TarEntry] = []
        self._headers: HeaderStream | None = None

    @property
    def layout(self) -> TarLayout:
        if self._layout is None:
            try:
                self._layout = scan_tar(self.file, self.size)
            except FormatError as exc:
                raise IntegrityError(
                    f"source layer {self.diff_id} is not the expected tar"
                ) from exc
            self._files = self._layout.regular_files()
            self._by_path = {e.path: e for e in self._files}
        return self._layout

    @property
    def header_stream(self) -> HeaderStream:
        if self._headers is None:
            self._headers = HeaderStream(self.file, self.layout)
        return self._headers

    def by_path(self, path: str) -> TarEntry:
        self.layout  # noqa: B018 - scan on first use
        entry = self._by_path.get(path)
        if entry is None:
            raise IntegrityError(f"source layer {self.diff_id} has no file {path!r}")
        return entry

    def by_index(self, index: int) -> TarEntry:
        self.layout  # noqa: B018 - scan on first use
        if index >= len(self._files):
            raise FormatError(f"patch names file #{index} of source {self.diff_id}")
        return self._files[index]

    def read(self, entry: TarEntry, offset: int, length: int) -> bytes:
        if offset + length > entry.data_len:
            raise FormatError("patch reads past the end of a source file")
        self.file.seek(entry.data_offset + offset)
        data = self.file.read(length)
        if len(data) != length:
            raise IntegrityError(f"source layer {self.diff_id} is shorter than expected")
        return data


class _Applier:
    """Interprets the op stream of one patch."""

    def __init__(
        self, patch: BinaryIO, meta: PatchMeta, sources: list[_Source], sink: HashingSink,
        limits: ApplyLimits,
    ) -> None:
        self.patch = patch
        self.meta = meta
        self.sources = sources
        self.sink = sink
        self.limits = limits
        self.path = ""
        self.entry_len = 0
        self.last_index: dict[int, int] = {}  # source -> last file index referenced
        self.group = b""
        self.group_pos = 0
        self._decoders: dict[str, BufferedDecoder] = {}

    def decoder(self, name: str) -> BufferedDecoder:
        dec = self._decoders.get(name)
        if dec is None:
            section = self.meta.section(name)
            if section is None:
                raise FormatError(f"patch uses section {name!r} it does not have")
            raw = SectionReader(self.patch, section.offset, section.length)
            if (name == p.SECTION_HEADERS) != (section.codec == p.CODEC_ZSTD_CHUNKS):
                raise FormatError(f"patch section {name!r} has codec {section.codec!r}")
            if name == p.SECTION_HEADERS:
                dec = HeaderReader(
                    raw, self._header_dict, max_chunk=self.limits.max_header_chunk,
                    max_dict=self.limits.max_header_dict, window_log=self.limits.max_window_log,
                )
            else:
                dec = open_decoder(
                    raw, name, section.codec, window_log=self.limits.max_window_log,
                    xz_memory=self.limits.max_xz_memory,
                    dict_data=self._literal_dict() if name == p.SECTION_LITERALS else None,
                )
            self._decoders[name] = dec
        return dec

    def _literal_dict(self) -> bytes | None:
        """Source tar bytes the literal section is compressed against (zstd dictionary)."""
        if self.meta.literal_dict is None:
            return None
        index, offset, length = self.meta.literal_dict
        if length > self.limits.max_literal_dict:
            raise FormatError("patch literal dictionary is over the limit")
        src = self.sources[index]
        if offset + length > src.size:
            raise FormatError("patch literal dictionary is past the end of its source")
        src.file.seek(offset)
        return src.file.read(length)

    def _header_dict(self, source: int, offset: int, length: int) -> bytes:
        if source >= len(self.sources):
            raise FormatError(f"header chunk names source #{source}")
        return self.sources[source].header_stream.slice(offset, length)

    def varint(self) -> int:
        return p.read_varint(self.ops)  # type: ignore[arg-type]

    def length(self, limit: int, what: str) -> int:
        n = self.varint()
        if n > limit:
            raise FormatError(f"{what} of {n} bytes is over the limit {limit}")
        return n

    def run(self) -> None:
        self.ops = self.decoder(p.SECTION_OPS)
        for _ in range(self.limits.max_ops):
            code = self.ops.read_byte()
            if code == Op.END:
                return
            self.step(code)
        raise FormatError(f"patch has more than {self.limits.max_ops} ops")

    def step(self, code: int) -> None:
        handlers = {
            Op.HEADER: self.op_header, Op.RAW: self.op_raw, Op.ZEROS: self.op_zeros,
            Op.PAD: self.op_pad,
            Op.LITERAL: self.op_literal, Op.LITERAL_ELF: self.op_literal_elf,
            Op.COPY: self.op_copy, Op.DELTA: self.op_delta, Op.GROUP: self.op_group,
            Op.FROM_GROUP: self.op_from_group, Op.GZIP: self.op_gzip,
        }
        handler = handlers.get(code)  # type: ignore[call-overload]
        if handler is None:
            raise FormatError(f"unknown op code {code:#x}")
        handler()

    def op_header(self) -> None:
        n = self.length(self.limits.max_header_run, "header run")
        raw = self.decoder(p.SECTION_HEADERS).read_exact(n)
        restored = transform_headers(raw, self.meta.mtime_field, restore=True)
        self.path, self.entry_len = header_chunk_info(restored)
        self.sink.write(restored)

    def op_raw(self) -> None:
        n = self.length(self.limits.max_header_run, "raw run")
        self.sink.write(self.decoder(p.SECTION_HEADERS).read_exact(n))

    def op_zeros(self) -> None:
        n = self.length(self.meta.target_size, "zero run")
        while n:
            step = min(n, CHUNK)
            self.sink.write(bytes(step))
            n -= step

    def op_pad(self) -> None:
        self.sink.write(bytes(round_up(self.entry_len) - self.entry_len))

    def _stream(self, section: str) -> None:
        n = self.length(self.meta.target_size, "literal")
        dec = self.decoder(section)
        while n:
            step = min(n, CHUNK)
            self.sink.write(dec.read_exact(step))
            n -= step

    def op_literal(self) -> None:
        self._stream(p.SECTION_LITERALS)

    def op_literal_elf(self) -> None:
        self._stream(p.SECTION_ELF)

    def ref(self) -> tuple[_Source, TarEntry]:
        kind = self.varint()
        src_index = self.varint()
        if src_index >= len(self.sources):
            raise FormatError(f"op names source #{src_index}, patch has {len(self.sources)}")
        src = self.sources[src_index]
        if kind == p.REF_SAME_PATH:
            return src, src.by_path(self.path)
        if kind == p.REF_FILE_INDEX:
            index = self.varint()
        elif kind == p.REF_FILE_NEXT:
            last = self.last_index.get(src_index)
            if last is None:
                raise FormatError("relative file reference without a previous one")
            index = last + 1 + p.unzigzag(self.varint())
            if index < 0:
                raise FormatError("relative file reference before the first file")
        else:
            raise FormatError(f"unknown file reference kind {kind}")
        self.last_index[src_index] = index
        return src, src.by_index(index)

    def op_copy(self) -> None:
        src, entry = self.ref()
        offset = 0
        while offset < entry.data_len:
            step = min(entry.data_len - offset, CHUNK)
            self.sink.write(src.read(entry, offset, step))
            offset += step

    def _undelta(self, old: bytes, new_len: int) -> bytes:
        method = self.varint()
        patch_len = self.length(self.limits.max_segment * 2 + 4096, "delta")
        patch = self.decoder(p.SECTION_DELTAS).read_exact(patch_len)
        if method == p.DELTA_HDIFF:
            check_hdiff_sizes(patch, len(old), new_len)
            try:
                new = bytes(hdiffpatch.apply(old, patch))
            except (hdiffpatch.HDiffPatchError, MemoryError, ValueError) as exc:
                raise FormatError(f"delta does not apply: {exc}") from exc
        elif method == p.DELTA_ZSTD:
            new = zstd_undelta(old, patch, new_len, self.limits.max_window_log)
        else:
            raise FormatError(f"unknown delta method {method}")
        if len(new) != new_len:
            raise FormatError("delta produced the wrong number of bytes")
        return new

    def op_delta(self) -> None:
        src, entry = self.ref()
        old_off = self.varint()
        old_len = self.length(self.limits.max_old_window, "delta base window")
        new_len = self.length(self.limits.max_segment, "delta segment")
        old = src.read(entry, old_off, old_len)
        self.sink.write(self._undelta(old, new_len))

    def op_group(self) -> None:
        count = self.length(self.limits.max_group_files, "group size")
        parts: list[bytes] = []
        total = 0
        for _ in range(count):
            src, entry = self.ref()
            total += entry.data_len
            if total > self.limits.max_old_window:
                raise FormatError("solid group base is over the limit")
            parts.append(src.read(entry, 0, entry.data_len))
        new_len = self.length(self.limits.max_segment, "solid group")
        self.group = self._undelta(b"".join(parts), new_len)
        self.group_pos = 0

    def op_from_group(self) -> None:
        n = self.entry_len
        if self.group_pos + n > len(self.group):
            raise FormatError("op reads past the end of its solid group")
        self.sink.write(self.group[self.group_pos : self.group_pos + n])
        self.group_pos += n

    def op_gzip(self) -> None:
        level = self.varint()
        if not 0 <= level <= 9:
            raise FormatError(f"bad gzip level {level}")
        header = self.ops.read_exact(self.length(4096, "gzip header"))
        inner = self.varint()
        raw_len = self.length(self.limits.max_segment, "gzip content")
        if inner == p.GZ_INNER_LITERAL:
            raw = self.decoder(p.SECTION_LITERALS).read_exact(raw_len)
        elif inner == p.GZ_INNER_DELTA:
            src, entry = self.ref()
            if entry.data_len > self.limits.max_old_window:
                raise FormatError("gzip delta base is over the limit")
            old = gunzip_exact(src.read(entry, 0, entry.data_len), self.limits.max_old_window)
            if old is None:
                raise IntegrityError(f"source layer {src.diff_id}: delta base is not gzip")
            raw = self._undelta(old, raw_len)
        else:
            raise FormatError(f"unknown gzip content kind {inner}")
        self.sink.write(gzip_member(header, raw, level))


def zstd_undelta(old: bytes, patch: bytes, new_len: int, window_log: int) -> bytes:
    """Decode a zstd frame compressed with old as raw-content dictionary."""
    zdict = zstandard.ZstdCompressionDict(old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    dctx = zstandard.ZstdDecompressor(dict_data=zdict, max_window_size=1 << window_log)
    parts: list[bytes] = []
    total = 0
    try:
        with dctx.stream_reader(patch) as reader:
            while total <= new_len:
                chunk = reader.read(new_len + 1 - total)
                if not chunk:
                    break
                parts.append(chunk)
                total += len(chunk)
    except zstandard.ZstdError as exc:
        raise FormatError(f"delta does not apply: {exc}") from exc
    return b"".join(parts)


def check_hdiff_sizes(patch: bytes, old_len: int, new_len: int) -> None:
    """Check an HDiffPatch header declares the sizes the op says, before applying it."""
    if not patch.startswith(_HDIFF_MAGIC):
        raise FormatError("delta is not an HDiffPatch patch")
    end = patch.find(b"\x00", len(_HDIFF_MAGIC), len(_HDIFF_MAGIC) + 32)
    if end < 0:
        raise FormatError("delta header is malformed")
    pos = end + 1
    values = []
    for _ in range(2):
        value = 0
        for _i in range(10):
            if pos >= len(patch):
                raise TruncatedError("delta header is truncated")
            byte = patch[pos]
            pos += 1
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        else:
            raise FormatError("delta header number too long")
        values.append(value)
    if values != [new_len, old_len]:
        raise FormatError("delta header sizes do not match its op")


def _open_sources(meta: PatchMeta, sources: Mapping[str, Path]) -> list[_Source]:
    missing = [d for d, _ in meta.sources if d not in sources]
    if missing:
        raise MissingSourceError(
            f"missing source layers: {', '.join(missing)}", missing=sorted(set(missing))
        )
    opened: list[_Source] = []
    try:
        for diff_id, size in meta.sources:
            src = _Source(diff_id, sources[diff_id])
            opened.append(src)
            if src.size != size:
                raise IntegrityError(
                    f"source layer {diff_id} has {src.size} bytes, the patch expects {size}"
                )
    except BaseException:
        for src in opened:
            src.file.close()
        raise
    return opened


def apply_layer_patch(
    patch: BinaryIO,
    sources: Mapping[str, Path],
    out: BinaryIO,
    *,
    limits: ApplyLimits = ApplyLimits(),
) -> None:
    """Stream the exact target tar to out, from a seekable patch and source layer tars.

    Raises:
        MissingSourceError: a needed source diff_id is not in sources (nothing written).
        FormatError / TruncatedError / UnsupportedVersionError: the patch is bad.
        IntegrityError: a digest does not match (patch section, source, or the output,
            whose sha256 must equal the target diff_id).
    """
    head = read_head(patch, limits.max_meta_size, limits.max_sources)
    meta = head.meta
    opened = _open_sources(meta, sources)
    try:
        if meta.zlib_version is not None:
            if meta.zlib_version != PINNED_DEFLATE:
                raise FormatError(
                    f"patch re-gzips with deflate {meta.zlib_version!r}, this deltaport "
                    f"re-gzips only with {PINNED_DEFLATE!r}"
                )
            require_pinned_deflate()
        verify_patch(patch, head)
        sink = HashingSink(out, meta.target_size)
        _Applier(patch, meta, opened, sink, limits).run()
        sink.verify(meta.target_diff_id)
    finally:
        for src in opened:
            src.file.close()
