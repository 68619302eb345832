"""Run one download in its own process, so a test can SIGKILL it mid-way.

usage: python -m tests.transfer.downloader_proc URL DEST PLAN_JSON [MAX_RATE]
Prints the DownloadResult as JSON on success.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from deltaport.transfer import ChunkPlan, DownloadConfig, download


def main(argv: list[str]) -> int:
    url, dest, plan_file = argv[:3]
    max_rate = int(argv[3]) if len(argv) > 3 else None
    raw = json.loads(Path(plan_file).read_text())
    plan = ChunkPlan(raw["total_size"], raw["chunk_size"], tuple(raw["chunk_digests"]),
                     raw.get("region_offset", 0))
    config = DownloadConfig(max_rate=max_rate, backoff_initial=0.05, backoff_max=0.5,
                            read_timeout=5, max_duration=60)
    result = download(url, Path(dest), plan, config=config)
    print(json.dumps({"bytes_fetched": result.bytes_fetched,
                      "bytes_reused": result.bytes_reused}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
