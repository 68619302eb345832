"""Apply streams: peak RSS stays flat for a ~200 MB layer (measured in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

from deltaport.delta import DeltaConfig, SourceLayer, build_layer_patch
from tests.delta.layers import Member, write_layer

MAX_RSS_MIB = 150

_APPLY = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from deltaport.delta import apply_layer_patch

    class Null:
        def write(self, data):
            return len(data)

    with open(sys.argv[1], "rb") as patch:
        apply_layer_patch(patch, {sys.argv[2]: Path(sys.argv[3])}, Null())
    # VmHWM, not ru_maxrss: Linux carries the forking parent's peak into ru_maxrss.
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM:"))
    print(int(hwm.split()[1]) // 1024)
    """
)


def _layers(tmp_path: Path) -> tuple[Path, Path, str]:
    chunk = os.urandom(4 << 20)
    big_old = b"".join(bytes([i]) + chunk[i:] + chunk[:i] for i in range(10))  # ~40 MB
    big_new = big_old[: 20 << 20] + b"inserted" + big_old[20 << 20 :]
    same = [Member(f"lib/f{i}", "file", chunk[i * 1000 :] + bytes([i])) for i in range(25)]
    old = [*same, Member("bin/big", "file", big_old)]
    new = [
        *same,
        Member("bin/big", "file", big_new, mtime=7),
        Member("data/zeros", "file", bytes(24 << 20)),
        Member("data/new", "file", os.urandom(24 << 20)),
    ]
    src, tgt = tmp_path / "src.tar", tmp_path / "tgt.tar"
    src_id = write_layer(src, old, tarfile.GNU_FORMAT)
    write_layer(tgt, new, tarfile.GNU_FORMAT)
    return src, tgt, src_id


def test_apply_peak_rss_is_bounded(tmp_path: Path) -> None:
    src, tgt, src_id = _layers(tmp_path)
    assert tgt.stat().st_size > 180 << 20
    patch = tmp_path / "p.patch"
    config = DeltaConfig(zstd_level=1, verify=False, try_full=False, xz_for_elf=False)
    with open(patch, "wb") as f:
        stats = build_layer_patch(tgt, [SourceLayer(src_id, src)], f, config=config)
    assert stats.counts.get("delta") == 1 and stats.counts.get("copied") == 25
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _APPLY, str(patch), src_id, str(src)],
        capture_output=True, text=True, env=env, check=False, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    peak_mib = int(done.stdout.strip())
    assert peak_mib < MAX_RSS_MIB, f"apply peak RSS {peak_mib} MiB"
