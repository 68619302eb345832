"""Value types of the layer delta engine: inputs, knobs, limits and results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Encoding(StrEnum):
    """How a target file's content went into a patch: the keys of ``LayerPatchStats``'s
    ``counts`` (files) and ``new_bytes`` (target bytes)."""

    COPIED = "copied"  # an identical source file
    DELTA = "delta"  # a delta against a similar file (in segments)
    DELTA_SOLID = "delta_solid"  # a small file in a solid group's delta
    GZIP_DELTA = "gzip_delta"  # a .gz whose content is a delta, re-gzipped on the device
    GZIP_LITERAL = "gzip_literal"  # a .gz whose content is literal, re-gzipped
    LITERAL = "literal"  # literal bytes
    LITERAL_ELF = "literal_elf"  # literal bytes of an ELF file (the ELF section)
    RAW = "raw"  # a tar the scanner does not model, as literal bytes


# Reproduced by construction: a patch of only these needs no self-check after building.
TRIVIAL_ENCODINGS = frozenset({Encoding.LITERAL, Encoding.LITERAL_ELF, Encoding.RAW,
                               Encoding.COPIED})
# Content sent as its own bytes (compressed), whatever the sources hold.
LITERAL_ENCODINGS = frozenset({Encoding.LITERAL, Encoding.LITERAL_ELF, Encoding.RAW,
                               Encoding.GZIP_LITERAL})


@dataclass(frozen=True)
class SourceLayer:
    """An uncompressed layer tar the device has, on disk (random access), named by diff_id."""

    diff_id: str
    path: Path


@dataclass(frozen=True)
class DeltaConfig:
    """Knobs of the patch builder. Defaults are what won on the benchmark corpus."""

    zstd_level: int = 19
    window_log: int = 25  # literal/delta sections; the device's decoder must allow it
    threads: int = 2  # zstd worker threads while building
    zstd_job_size: int = 16 << 20  # bytes per zstd worker job (sections over 8 MiB)
    zstd_overlap_log: int = 6  # each job sees window >> 3 bytes of the previous one
    workers: int = 2  # processes diffing big-file segments in parallel
    xz_for_elf: bool = True  # xz + x86 BCJ for ELF literals where it beats zstd
    xz_preset: int = 6  # LZMA2 preset; match search lightened (sections._xz_filters)
    xz_piece: int = 64 << 20  # ELF bytes per independent .xz stream (compressed in parallel)
    segment_size: int = 8 << 20  # new bytes per hdiff segment (bounds apply memory)
    segment_margin: int = 1 << 20  # old window = matching new range widened by this each side
    group_max_file: int = 256 << 10  # files up to this size whose own delta pays are diffed
    # together in solid groups (the others are literal)
    group_max_bytes: int = 4 << 20  # new bytes per solid group
    zstd_delta_max: int = 1 << 20  # also try zstd-with-dictionary deltas up to this size
    min_delta_gain: float = 0.9  # delta must be < this × literal estimate to be used
    rename_match: bool = True  # version-bumped / moved paths as delta bases
    gzip_recompress: bool = True  # delta the content of .gz files, re-gzip on the device
    gzip_max_size: int = 16 << 20  # decompressed bytes of one .gz handled that way
    header_chunk: int = 4 << 20  # target header bytes per header-section chunk
    header_dict_size: int = 6 << 20  # bytes of source headers used as one chunk's dictionary
    header_level: int = 19  # zstd level of header chunks
    literal_dict_size: int = 8 << 20  # source tar bytes: the literal section's dictionary
    text_xz_max: int = 64 << 20  # delta patches: literal/delta sections up to this use xz if
    # a sample says it wins (one stream, no BCJ, pb 0, nice_len 273: ~2.2 MB/s); 0 = never
    text_xz_preset: int = 9  # LZMA2 preset of those sections (dictionary ≤ 64 MiB)
    text_xz_full: bool = True  # full (first-image) builds too: slower, built once, smaller
    verify: bool = True  # apply delta/group/gzip patches after building and compare
    try_full: bool = True  # also build the self-contained encoding; keep the smaller
    config_base: bool = True  # pack the target config against a source image's config


@dataclass(frozen=True)
class ApplyLimits:
    """Named limits the applier enforces on untrusted patches."""

    max_meta_size: int = 1 << 20
    max_window_log: int = 27  # zstd decoder max_window_size = 1 << this
    max_xz_memory: int = 256 << 20
    max_segment: int = 32 << 20  # new bytes of one hdiff segment / group / gzip
    max_old_window: int = 48 << 20  # old bytes one hdiff segment may read
    max_group_files: int = 100_000
    max_ops: int = 50_000_000
    max_header_run: int = 4 << 20  # bytes of one HEADER / RAW op
    max_sources: int = 4096
    max_literal_dict: int = 32 << 20  # source bytes the literal section may use as dictionary
    max_header_dict: int = 16 << 20  # source header bytes one header chunk uses as dictionary
    max_header_chunk: int = 16 << 20  # decoded bytes of one header chunk


@dataclass(frozen=True)
class LayerPatchStats:
    """What a patch is made of: counts and bytes per kind of encoding."""

    target_diff_id: str
    target_size: int
    patch_size: int
    mode: str  # "delta" or "full"
    required_sources: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)  # files per kind
    new_bytes: dict[str, int] = field(default_factory=dict)  # target bytes per kind
    section_bytes: dict[str, int] = field(default_factory=dict)  # patch bytes per section
    section_codecs: dict[str, str] = field(default_factory=dict)  # codec of each section

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (``kind`` is the mode: "delta" or "full")."""
        return {
            "target_diff_id": self.target_diff_id,
            "target_size": self.target_size,
            "patch_size": self.patch_size,
            "kind": self.mode,
            "required_sources": list(self.required_sources),
            "counts": dict(self.counts),
            "new_bytes": dict(self.new_bytes),
            "section_bytes": dict(self.section_bytes),
        }


@dataclass(frozen=True)
class PatchRequirements:
    """What applying a patch needs and makes."""

    format_version: int
    target_diff_id: str
    target_size: int
    source_diff_ids: tuple[str, ...]

    @property
    def sources(self) -> tuple[str, ...]:
        """The source diff_ids the patch needs (alias of source_diff_ids)."""
        return self.source_diff_ids
