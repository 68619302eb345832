"""Planning: how each member of the target tar is rebuilt, decided before a byte is written.

For every member the plan says copy (an identical file is in a source), delta (against
the most similar source file: same path, else renamed; big files in segments), group
(a small file whose own delta pays, diffed with others in a solid group), gzip (a .gz
whose content is diffed and re-gzipped on the device), literal, or empty. The plan also
numbers the sources the patch uses and picks, per member, the source whose headers serve
as its header dictionary. A ``LayerPlan`` is immutable; emitting reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from deltaport.delta.encode import screen_pays, whole_file_job
from deltaport.delta.gzipcodec import GzipSplit, split_gzip
from deltaport.delta.model import DeltaConfig
from deltaport.delta.pool import pool_map
from deltaport.delta.sources import FileRef, Source, SourceIndex, Target
from deltaport.delta.tarscan import TarEntry, TarLayout

POOL_MIN_SCREEN = 64  # small files before their screening goes to worker processes
SCREEN_CHUNK = 32  # small files per worker task


class PlanKind(Enum):
    """How one member's content is rebuilt."""

    EMPTY = "empty"  # no content
    COPY = "copy"  # an identical source file
    DELTA = "delta"  # a delta against a similar source file, in segments
    GROUP = "group"  # a small file in a solid group diffed as one
    GZIP = "gzip"  # a .gz: its content diffed or literal, re-gzipped on the device
    LITERAL = "literal"  # its bytes


@dataclass(frozen=True)
class FilePlan:
    """The plan of one member."""

    kind: PlanKind
    ref: FileRef | None = None  # the source file (COPY, DELTA, GROUP, GZIP)
    gz: GzipSplit | None = None  # the gzip stream split (GZIP)
    elf: bool = False  # content starts with the ELF magic (goes to the ELF section)


_EMPTY = FilePlan(PlanKind.EMPTY)


@dataclass(frozen=True)
class LayerPlan:
    """The plan of a whole layer."""

    layout: TarLayout
    files: Mapping[int, FilePlan]  # member header_offset -> its plan
    groups: tuple[tuple[TarEntry, ...], ...]  # solid groups of GROUP members, in tar order
    group_of: Mapping[int, int]  # GROUP member header_offset -> its group's index
    header_sources: Mapping[int, Source]  # member header_offset -> its header dictionary
    used: tuple[Source, ...]  # the sources the patch needs, in input order
    numbers: Mapping[int, int]  # Source.index -> the source's number in the patch

    def number(self, src: Source) -> int:
        """SRC's number in the patch (0..len(used)-1)."""
        return self.numbers[src.index]

    def of(self, entry: TarEntry) -> FilePlan:
        return self.files[entry.header_offset]


def _plan_member(target: Target, entry: TarEntry, index: SourceIndex,
                 config: DeltaConfig) -> FilePlan:
    if entry.data_len == 0:
        return _EMPTY
    head = target.read(entry, 0, min(4, entry.data_len))
    elf = head == b"\x7fELF"
    if not entry.is_regular or not index.sources:
        return FilePlan(PlanKind.LITERAL, elf=elf)
    same = index.identical(entry.path, entry.data_len, target.sha(entry))
    if same is not None:
        return FilePlan(PlanKind.COPY, same)
    similar = index.similar(entry.path, entry.data_len)
    if similar is None:
        return FilePlan(PlanKind.LITERAL, elf=elf)
    if (
        config.gzip_recompress
        and head[:2] == b"\x1f\x8b"
        and entry.data_len <= config.gzip_max_size
    ):
        gz = split_gzip(target.read(entry), config.gzip_max_size)
        if gz is not None:
            return FilePlan(PlanKind.GZIP, similar, gz)
    if entry.data_len <= config.group_max_file:
        return FilePlan(PlanKind.GROUP, similar)
    return FilePlan(PlanKind.DELTA, similar, elf=elf)


def _screen_small(target: Target, entries: Sequence[TarEntry],
                  files: Mapping[int, FilePlan], config: DeltaConfig) -> set[int]:
    """Header offsets of the small files whose own delta beats their literal.

    Only those join a solid group: a group is accepted or refused as a whole, and
    mixing a few good pairs with many poor ones (renamed paths, other package
    versions) made groups lose to literals on the S1 benchmark (3 % of the patch).
    The screen is a fast zstd-with-dictionary probe (the group then uses HDiffPatch
    or zstd -19), in ``workers`` processes: L2 has 300 MB of small changed files.
    """
    small = [(e, plan.ref) for e in entries
             if (plan := files[e.header_offset]).kind is PlanKind.GROUP and plan.ref]
    jobs = [whole_file_job(str(target.path), e, ref, config) for e, ref in small]
    workers = config.workers if len(jobs) >= POOL_MIN_SCREEN else 1
    pays = pool_map(screen_pays, jobs, workers, chunksize=SCREEN_CHUNK)
    return {e.header_offset for (e, _), ok in zip(small, pays, strict=True) if ok}


def _form_groups(target: Target, entries: Sequence[TarEntry], files: dict[int, FilePlan],
                 config: DeltaConfig) -> tuple[tuple[TarEntry, ...], ...]:
    """Cut the screened small files into solid groups; the others become literals."""
    pays = _screen_small(target, entries, files, config)
    groups: list[tuple[TarEntry, ...]] = []
    current: list[TarEntry] = []
    total = 0
    for entry in entries:
        if files[entry.header_offset].kind is not PlanKind.GROUP:
            continue
        if entry.header_offset not in pays:
            files[entry.header_offset] = FilePlan(PlanKind.LITERAL)
            continue
        if current and total + entry.data_len > config.group_max_bytes:
            groups.append(tuple(current))
            current, total = [], 0
        current.append(entry)
        total += entry.data_len
    if current:
        groups.append(tuple(current))
    return tuple(groups)


def _header_sources(entries: Sequence[TarEntry], files: Mapping[int, FilePlan],
                    sources: Sequence[Source]) -> dict[int, Source]:
    """Per member, the source whose headers are its dictionary: one that has its path,
    preferring the source its content comes from."""
    chosen: dict[int, Source] = {}
    for entry in entries:
        ref = files[entry.header_offset].ref
        candidates = [ref.src] if ref is not None else []
        for src in [*candidates, *sources]:
            if entry.path in src.scan.entry_index:
                chosen[entry.header_offset] = src
                break
    return chosen


def plan_layer(target: Target, sources: Sequence[Source], config: DeltaConfig) -> LayerPlan:
    """The plan of TARGET (whose tar the scanner models) from SOURCES."""
    layout = target.layout
    assert layout is not None, "a layer the scanner does not model has no plan"
    index = SourceIndex(sources, config.rename_match)
    entries = layout.entries
    files = {e.header_offset: _plan_member(target, e, index, config) for e in entries}
    groups = _form_groups(target, entries, files, config)
    group_of = {m.header_offset: i for i, members in enumerate(groups) for m in members}
    header_sources = _header_sources(entries, files, sources)
    needed = {plan.ref.src.index for plan in files.values() if plan.ref is not None}
    needed |= {src.index for src in header_sources.values()}
    used = tuple(src for src in sources if src.index in needed)
    return LayerPlan(
        layout=layout,
        files=MappingProxyType(files),
        groups=groups,
        group_of=MappingProxyType(group_of),
        header_sources=MappingProxyType(header_sources),
        used=used,
        numbers=MappingProxyType({src.index: n for n, src in enumerate(used)}),
    )
