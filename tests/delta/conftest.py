"""Fixtures for the delta engine tests."""

from __future__ import annotations

from deltaport.delta import DeltaConfig

# Fast knobs for property tests: low levels, no self-check (the tests apply anyway).
# Small header chunks so multi-chunk header sections with source ranges are exercised.
FAST = DeltaConfig(
    zstd_level=3, xz_preset=1, verify=False, threads=0, header_chunk=2048, header_dict_size=4096
)
