"""Encoding: binary deltas of files and segments, and the compression of whole sections.

Deltas are HDiffPatch patches, or for small inputs zstd frames with the old bytes as
dictionary where smaller. Costs are compared in one unit, the literal estimate (zstd
level 3 of the bytes as they would go to a section), so a delta is used only where it
beats sending the bytes. Big files are diffed in bounded segments, each against a
proportionally placed window of the old file, in worker processes (``delta.pool``).
"""

from __future__ import annotations

from dataclasses import dataclass

import hdiffpatch
import zstandard

from deltaport.delta import protocol as p
from deltaport.delta.model import DeltaConfig
from deltaport.delta.sections import (
    Encoded,
    RawSection,
    finish_encoded,
    xz_compress,
    xz_wins,
    zstd_compress,
)
from deltaport.delta.sources import FileRef
from deltaport.delta.tarscan import TarEntry

ESTIMATE_LEVEL = 3  # zstd level of the literal estimate every cost is measured in


def estimate(data: bytes) -> int:
    """Bytes DATA would take in a section: the unit every encoding's cost is given in."""
    return len(zstandard.ZstdCompressor(level=ESTIMATE_LEVEL).compress(data))


def hdiff(old: bytes, new: bytes) -> bytes:
    """An uncompressed HDiffPatch patch (its section is compressed as a whole)."""
    return bytes(hdiffpatch.diff(old, new, compression=hdiffpatch.COMPRESSION_NONE, validate=False))


@dataclass(frozen=True)
class Delta:
    """A delta of new against old bytes, ready for the deltas section."""

    method: int  # protocol.DELTA_HDIFF or DELTA_ZSTD
    payload: bytes
    cost: int  # estimated bytes once the deltas section is compressed


def best_delta(old: bytes, new: bytes, zstd_max: int) -> Delta:
    """HDiffPatch, or for small inputs a zstd frame with old as dictionary if smaller.

    Costs are in the unit of the literal estimate (zstd level 3), so callers can
    compare them with ``estimate(new)``: the level-19 zstd frame's size is scaled by
    how much level 19 alone gains on ``new``. Unscaled, level 19 against level 3
    passed files whose base did not help at all (S1: 3 MB of "deltas" at 13 %).
    """
    hd = hdiff(old, new)
    best = Delta(p.DELTA_HDIFF, hd, estimate(hd))
    if len(new) <= zstd_max and old:
        zdict = zstandard.ZstdCompressionDict(old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        window_log = max(10, min(27, (len(old) + len(new)).bit_length()))
        params = zstandard.ZstdCompressionParameters.from_level(
            19, source_size=len(new), window_log=window_log
        )
        zs = zstandard.ZstdCompressor(compression_params=params, dict_data=zdict).compress(new)
        alone = zstandard.ZstdCompressor(compression_params=params).compress(new)
        cost = len(zs) * estimate(new) // max(len(alone), 1)
        if cost < best.cost:
            best = Delta(p.DELTA_ZSTD, zs, cost)
    return best


def delta_pays(delta: Delta, new: bytes, config: DeltaConfig) -> bool:
    """Whether DELTA is worth sending instead of NEW itself."""
    return delta.cost < config.min_delta_gain * estimate(new)


@dataclass(frozen=True)
class SegmentJob:
    """One segment of a file to diff: where its new and old bytes lie (sent to workers)."""

    target: str
    new_abs: int  # offset of the new bytes in the target tar
    new_len: int
    source: str
    old_abs: int  # offset of the old window in the source tar
    old_rel: int  # the same, from the start of the old file
    old_len: int
    min_gain: float


def _read_at(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def run_segment(job: SegmentJob) -> Delta | None:
    """The segment's delta, or None where its literal is smaller (runs in workers)."""
    new = _read_at(job.target, job.new_abs, job.new_len)
    old = _read_at(job.source, job.old_abs, job.old_len)
    delta = best_delta(old, new, 0)
    return delta if delta.cost < job.min_gain * estimate(new) else None


def screen_pays(job: SegmentJob) -> bool:
    """Whether the base makes the file cheaper than its literal by job.min_gain (workers).

    Measured with the literal estimate's own zstd level, the base as raw-content
    dictionary: several times faster than HDiffPatch, and in the same unit.
    """
    new = _read_at(job.target, job.new_abs, job.new_len)
    old = _read_at(job.source, job.old_abs, job.old_len)
    zdict = zstandard.ZstdCompressionDict(old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    with_base = zstandard.ZstdCompressor(level=ESTIMATE_LEVEL, dict_data=zdict).compress(new)
    return len(with_base) < job.min_gain * estimate(new)


def whole_file_job(target: str, entry: TarEntry, ref: FileRef, config: DeltaConfig) -> SegmentJob:
    """The job that diffs all of ENTRY against all of REF's file."""
    return SegmentJob(
        target, entry.data_offset, entry.data_len, str(ref.src.layer.path),
        ref.entry.data_offset, 0, ref.entry.data_len, config.min_delta_gain,
    )


def segment_jobs(target: str, entry: TarEntry, ref: FileRef,
                 config: DeltaConfig) -> list[SegmentJob]:
    """A big file cut into segments, each with a proportionally placed old window."""
    seg, margin = config.segment_size, config.segment_margin
    old_size = ref.entry.data_len
    jobs: list[SegmentJob] = []
    for offset in range(0, entry.data_len, seg):
        new_len = min(seg, entry.data_len - offset)
        center = offset * old_size // entry.data_len
        old_off = max(0, min(center - margin, old_size - new_len - 2 * margin))
        old_len = min(old_size - old_off, new_len + 2 * margin)
        jobs.append(SegmentJob(
            target, entry.data_offset + offset, new_len,
            str(ref.src.layer.path), ref.entry.data_offset + old_off, old_off, old_len,
            config.min_delta_gain,
        ))
    return jobs


# -- sections -----------------------------------------------------------------------


def _text_xz(raw: RawSection, config: DeltaConfig, delta_mode: bool) -> bool:
    """Whether a literal/delta section goes to xz (text filters) rather than zstd.

    In delta patches, whose literal sections are small; in full builds only with
    ``text_xz_full``: a single LZMA2 stream runs at ~2.2 MB/s, but a first image is
    built once and cached (``image register --prebuild``), and on the second corpus's
    S0 it was 2.6 % smaller than zstd -19 with the same headers and ELF section.
    """
    return (
        (delta_mode or config.text_xz_full)
        and raw.name in (p.SECTION_LITERALS, p.SECTION_DELTAS)
        and 0 < raw.length <= config.text_xz_max
        and xz_wins(raw, level=config.zstd_level, preset=config.text_xz_preset, text=True)
    )


def encode_section(raw: RawSection, config: DeltaConfig, *, literal_dict: bytes | None,
                   delta_mode: bool) -> Encoded:
    """One raw section compressed by the codec that wins for it.

    ELF code: xz with x86 BCJ where it beats zstd on a sample; literal and delta
    sections of delta patches: xz with text filters where that wins; else zstd (the
    literal section with the source range as dictionary).
    """
    c = config
    if raw.name == p.SECTION_ELF and c.xz_for_elf and xz_wins(
        raw, level=c.zstd_level, preset=c.xz_preset
    ):
        return xz_compress(raw, preset=c.xz_preset, workers=c.workers, piece=c.xz_piece)
    if _text_xz(raw, c, delta_mode):
        return xz_compress(raw, preset=c.text_xz_preset, text=True)
    return zstd_compress(
        raw, level=c.zstd_level, window_log=c.window_log, threads=c.threads,
        dict_data=literal_dict if raw.name == p.SECTION_LITERALS else None,
        job_size=c.zstd_job_size, overlap_log=c.zstd_overlap_log,
    )


def encode_sections(
    ops: bytes, raw: dict[str, RawSection], headers: tuple[int, int] | None,
    headers_file: object, config: DeltaConfig, *, literal_dict: bytes | None,
    delta_mode: bool,
) -> list[Encoded]:
    """Every non-empty section, in ``protocol.SECTION_NAMES`` order.

    HEADERS is (encoded length, raw length) of the header section the header writer
    already compressed into HEADERS_FILE (chunked, with source dictionaries).
    """
    encoded: list[Encoded] = []
    if headers is not None and headers[0]:
        encoded.append(finish_encoded(
            p.SECTION_HEADERS, p.CODEC_ZSTD_CHUNKS, headers_file, headers[1]  # type: ignore[arg-type]
        ))
    for name in p.SECTION_NAMES:
        if name == p.SECTION_HEADERS:
            continue
        if name == p.SECTION_OPS:
            section = RawSection(name)
            section.write(ops)
        else:
            section = raw[name]
        if section.length == 0 and name != p.SECTION_OPS:
            continue
        encoded.append(encode_section(section, config, literal_dict=literal_dict,
                                      delta_mode=delta_mode))
        if name == p.SECTION_OPS:
            section.close()
    return encoded

