"""Emitting: the op stream and raw sections of a patch, written from a ``LayerPlan``.

Members are walked in tar order. Each gets a HEADER op (its header blocks go,
transformed, to the header section with its header source as dictionary), then its
content as the plan says, then its padding; the tar's trailer ends the stream. Deltas
were computed before (``encode``) or are computed here where they are decided as a
whole (a solid group, at its first member; a .gz's content). Op encodings are in
docs/patch-format.md; the applier (``delta.apply``) reads them back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from deltaport.delta import protocol as p
from deltaport.delta.encode import Delta, best_delta, delta_pays, run_segment, segment_jobs
from deltaport.delta.gzipcodec import gunzip_exact
from deltaport.delta.headers import HeaderStream, HeaderWriter
from deltaport.delta.model import DeltaConfig, Encoding
from deltaport.delta.plan import FilePlan, LayerPlan, PlanKind
from deltaport.delta.protocol import Op
from deltaport.delta.sections import RawSection
from deltaport.delta.sources import FileRef, Target
from deltaport.delta.tarscan import TarEntry, common_mtime_field, round_up, transform_headers

RAW_STEP = 1 << 20  # bytes of one RAW / ZEROS op between members


class OpWriter:
    """The op stream and the raw sections of one patch, appended to as members go."""

    def __init__(self, plan: LayerPlan | None) -> None:
        self.plan = plan
        self.ops = bytearray()
        self.raw = {
            name: RawSection(name)
            for name in p.SECTION_NAMES
            if name not in (p.SECTION_OPS, p.SECTION_HEADERS)
        }
        self.counts: Counter[str] = Counter()
        self.new_bytes: Counter[str] = Counter()
        self._last_index: dict[int, int] = {}  # source number -> last file position referenced

    def close(self) -> None:
        for raw in self.raw.values():
            raw.close()

    def op(self, code: Op, *values: int) -> None:
        self.ops.append(code)
        for v in values:
            p.write_varint(self.ops, v)

    def varint(self, value: int) -> None:
        p.write_varint(self.ops, value)

    def delta(self, d: Delta) -> None:
        """A delta's method and length in the op stream, its payload in the deltas section."""
        self.varint(d.method)
        self.varint(len(d.payload))
        self.raw[p.SECTION_DELTAS].write(d.payload)

    def ref(self, ref: FileRef, allow_path: bool = True) -> None:
        """A file reference: by the member's own path, else by position (relative if it can)."""
        assert self.plan is not None
        number = self.plan.number(ref.src)
        if ref.same_path and allow_path:
            self.varint(p.REF_SAME_PATH)
            self.varint(number)
            return
        index = ref.position
        last = self._last_index.get(number)
        self._last_index[number] = index
        if last is None:
            self.varint(p.REF_FILE_INDEX)
            self.varint(number)
            self.varint(index)
        else:
            self.varint(p.REF_FILE_NEXT)
            self.varint(number)
            self.varint(p.zigzag(index - last - 1))

    def literal(self, data: bytes, elf: bool) -> None:
        section = p.SECTION_ELF if elf else p.SECTION_LITERALS
        self.op(Op.LITERAL_ELF if elf else Op.LITERAL, len(data))
        if elf:
            self.raw[section].write_elf(data)
        else:
            self.raw[section].write(data)

    def count(self, kind: Encoding, n: int) -> None:
        self.counts[kind] += 1
        self.new_bytes[kind] += n


@dataclass(frozen=True)
class Emitted:
    """What emitting a layer wrote: the header section's lengths (None if it has none)."""

    headers: tuple[int, int] | None  # (encoded, raw) bytes of the header section


class _Emitter:
    """Walks the plan in tar order, writing each member (one emitter per patch)."""

    def __init__(self, target: Target, plan: LayerPlan, segments: Mapping[int, Delta | None],
                 config: DeltaConfig, writer: OpWriter, headers: HeaderWriter) -> None:
        self.target, self.plan, self.segments = target, plan, segments
        self.config, self.w, self.headers = config, writer, headers
        self.group_ok: dict[int, bool] = {}  # group index -> its delta was used

    def layer(self) -> None:
        layout = self.plan.layout
        mtime = common_mtime_field(layout)
        for entry in layout.entries:
            header = self.target.read_at(entry.header_offset, entry.header_len)
            self.w.op(Op.HEADER, len(header))
            self.headers.write(transform_headers(header, mtime), self._header_match(entry))
            self._content(entry, self.plan.of(entry))
            self._padding(entry)
        self._raw(layout.trailer_offset, self.target.size - layout.trailer_offset)
        self.headers.flush()
        self.w.op(Op.END)

    def _header_match(self, entry: TarEntry) -> tuple[int, int, int] | None:
        src = self.plan.header_sources.get(entry.header_offset)
        if src is None:
            return None
        index = src.scan.entry_index[entry.path]
        return (self.plan.number(src), src.scan.header_starts[index],
                src.layout.entries[index].header_len)

    def _raw(self, offset: int, length: int) -> None:
        while length:
            step = min(length, RAW_STEP)
            data = self.target.read_at(offset, step)
            if data.count(0) == len(data):
                self.w.op(Op.ZEROS, step)
            else:
                self.w.op(Op.RAW, step)
                self.headers.write(data)
            offset += step
            length -= step

    def _padding(self, entry: TarEntry) -> None:
        if not entry.pad_len:
            return
        offset = entry.data_offset + entry.data_len
        if round_up(entry.data_len) - entry.data_len == entry.pad_len and not any(
            self.target.read_at(offset, entry.pad_len)
        ):
            self.w.op(Op.PAD)
        else:
            self._raw(offset, entry.pad_len)

    def _content(self, entry: TarEntry, plan: FilePlan) -> None:
        if plan.kind is PlanKind.EMPTY:
            return
        if plan.kind is PlanKind.COPY:
            assert plan.ref is not None
            self.w.op(Op.COPY)
            self.w.ref(plan.ref)
            self.w.count(Encoding.COPIED, entry.data_len)
        elif plan.kind is PlanKind.GROUP:
            self._group_member(entry)
        elif plan.kind is PlanKind.GZIP:
            self._gzip(entry, plan)
        elif plan.kind is PlanKind.DELTA:
            self._delta(entry, plan)
        else:
            self._literal(entry, plan.elf)

    def _literal(self, entry: TarEntry, elf: bool) -> None:
        offset = 0
        while offset < entry.data_len:
            step = min(self.config.segment_size, entry.data_len - offset)
            self.w.literal(self.target.read(entry, offset, step), elf)
            offset += step
        self.w.count(Encoding.LITERAL_ELF if elf else Encoding.LITERAL, entry.data_len)

    def _delta(self, entry: TarEntry, plan: FilePlan) -> None:
        ref = plan.ref
        assert ref is not None
        used_delta = False
        for job in segment_jobs(str(self.target.path), entry, ref, self.config):
            result = (self.segments[job.new_abs] if job.new_abs in self.segments
                      else run_segment(job))
            if result is not None:
                self.w.op(Op.DELTA)
                self.w.ref(ref)
                for v in (job.old_rel, job.old_len, job.new_len):
                    self.w.varint(v)
                self.w.delta(result)
                used_delta = True
            else:
                self.w.literal(self.target.read_at(job.new_abs, job.new_len), plan.elf)
        self.w.count(Encoding.DELTA if used_delta else Encoding.LITERAL, entry.data_len)

    def _group_member(self, entry: TarEntry) -> None:
        group = self.plan.group_of[entry.header_offset]
        if group not in self.group_ok:
            self.group_ok[group] = self._group(self.plan.groups[group])
        if self.group_ok[group]:
            self.w.op(Op.FROM_GROUP)
            self.w.count(Encoding.DELTA_SOLID, entry.data_len)
        else:
            self._literal(entry, False)

    def _group(self, members: tuple[TarEntry, ...]) -> bool:
        """At a group's first member: its solid delta, written if it pays."""
        refs = [self.plan.of(m).ref for m in members]
        olds = [ref.src.read(ref.entry) for ref in refs if ref is not None]
        new = b"".join(self.target.read(m) for m in members)
        delta = best_delta(b"".join(olds), new, self.config.zstd_delta_max)
        if not delta_pays(delta, new, self.config):
            return False
        self.w.op(Op.GROUP, len(members))
        for ref in refs:
            assert ref is not None
            self.w.ref(ref, allow_path=False)
        self.w.varint(len(new))
        self.w.delta(delta)
        return True

    def _gzip(self, entry: TarEntry, plan: FilePlan) -> None:
        gz, ref = plan.gz, plan.ref
        assert gz is not None and ref is not None
        old_raw = gunzip_exact(ref.src.read(ref.entry), self.config.gzip_max_size)
        self.w.op(Op.GZIP, gz.level, len(gz.header))
        self.w.ops += gz.header
        if old_raw is not None:
            delta = best_delta(old_raw, gz.raw, self.config.zstd_delta_max)
            if delta_pays(delta, gz.raw, self.config):
                self.w.varint(p.GZ_INNER_DELTA)
                self.w.varint(len(gz.raw))
                self.w.ref(ref)
                self.w.delta(delta)
                self.w.count(Encoding.GZIP_DELTA, entry.data_len)
                return
        self.w.varint(p.GZ_INNER_LITERAL)
        self.w.varint(len(gz.raw))
        self.w.raw[p.SECTION_LITERALS].write(gz.raw)
        self.w.count(Encoding.GZIP_LITERAL, entry.data_len)


def emit_layer(target: Target, plan: LayerPlan, segments: Mapping[int, Delta | None],
               config: DeltaConfig, writer: OpWriter, headers_file: BinaryIO) -> Emitted:
    """Write TARGET as PLAN says into WRITER (ops, raw sections) and HEADERS_FILE."""
    headers = HeaderWriter(
        headers_file, [HeaderStream(s.file, s.layout) for s in plan.used],
        chunk=config.header_chunk, dict_limit=config.header_dict_size,
        level=config.header_level,
    )
    _Emitter(target, plan, segments, config, writer, headers).layer()
    return Emitted((headers.length, headers.raw_length))


def emit_raw_layer(target: Target, config: DeltaConfig, writer: OpWriter) -> Emitted:
    """A tar the scanner does not model: the whole file as literal bytes."""
    offset = 0
    while offset < target.size:
        chunk = target.read_at(offset, min(config.segment_size, target.size - offset))
        writer.literal(chunk, elf=False)
        offset += len(chunk)
    writer.count(Encoding.RAW, target.size)
    writer.op(Op.END)
    return Emitted(None)

