"""Resumable, verified, rate-limited downloads for the device side.

``download`` fetches a file (or a region of one) into ``dest`` over a bad link:
resume by ``Range`` from what is on disk, verify each chunk against a
:class:`ChunkPlan`, back off while the link is down, cap the bandwidth.
``fetch_range`` reads a few bytes (a bundle's head). ``make_plan`` computes the
chunk digests a publisher hands to devices.
"""

from deltaport.transfer.config import DEFAULT_CHUNK_SIZE, DownloadConfig, DownloadResult
from deltaport.transfer.download import Progress, download, fetch_range
from deltaport.transfer.partfile import part_path
from deltaport.transfer.plan import ByteRange, ChunkPlan, make_plan, ranges_to_fetch

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ByteRange",
    "ChunkPlan",
    "DownloadConfig",
    "DownloadResult",
    "Progress",
    "download",
    "fetch_range",
    "make_plan",
    "part_path",
    "ranges_to_fetch",
]
