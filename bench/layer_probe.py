"""Probe the layer delta engine on real layer pairs from the benchmark corpus.

For a scenario (source image -> target image, docker-save archives), every target
layer whose diff_id the source lacks is built with build_layer_patch (all source
layers as sources), applied back and checked byte-exact; build/apply MB/s are taken
over the layers built. For comparison, each such layer is also coded with
``zstd -19 --long=31 --patch-from=<same-index source layer>``.

    .venv/bin/python bench/layer_probe.py --data /work/benchdata/public S2 S3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from deltaport.delta import DeltaConfig, SourceLayer, build_layer_patch

SCENARIOS = {
    "S0": (None, "appA-v1"),
    "S1": ("appA-v1", "appB-v1"),
    "S2": ("appA-v1", "appA-v2"),
    "S3": ("appA-v1", "appA-v1-base2"),
    "L2": ("ml-v1", "ml-v2"),
}


def extract_layers(archive: Path, work: Path) -> list[Path]:
    """The image's layer tars (in order) copied out of a docker-save archive."""
    out: list[Path] = []
    with tarfile.open(archive) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        for name in manifest[0]["Layers"]:
            dest = work / Path(name).name
            if not dest.exists():
                member = tf.extractfile(name)
                assert member is not None
                partial = dest.with_suffix(".partial")
                with open(partial, "wb") as f:
                    shutil.copyfileobj(member, f, 1 << 20)
                partial.replace(dest)
            out.append(dest)
    return out


def diff_id(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


_APPLY = """
import json, sys
from pathlib import Path
from deltaport.delta import apply_layer_patch
sources = {k: Path(v) for k, v in json.loads(sys.argv[2]).items()}
with open(sys.argv[1], "rb") as patch, open(sys.argv[3], "wb") as out:
    apply_layer_patch(patch, sources, out)
with open("/proc/self/status") as status:
    print(next(x for x in status if x.startswith("VmHWM:")).split()[1])
"""


def apply_in_child(patch: Path, sources: list[SourceLayer], out: Path) -> int:
    """Apply in a fresh process; returns its peak RSS (VmHWM) in MiB."""
    mapping = json.dumps({s.diff_id: str(s.path) for s in sources})
    done = subprocess.run(
        [sys.executable, "-c", _APPLY, str(patch), mapping, str(out)],
        check=True, capture_output=True, text=True,
    )
    return int(done.stdout.strip()) // 1024


def zstd_patch_from(old: Path | None, new: Path, work: Path) -> int:
    out = work / "zstd.out"
    cmd = ["zstd", "-q", "-f", "-19", "--long=31", "-T2", str(new), "-o", str(out)]
    if old is not None:
        cmd[1:1] = [f"--patch-from={old}"]
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    size = out.stat().st_size
    out.unlink()
    return size


def scenario(name: str, data: Path) -> tuple[str | None, str]:
    """(source image, target image) of a scenario, from scenarios.json when present."""
    path = data / "scenarios.json"
    if path.exists():
        for item in json.loads(path.read_text()):
            if item["id"] == name:
                return item["old"], item["new"]
    return SCENARIOS[name]


def probe(
    name: str, data: Path, work: Path, config: DeltaConfig, with_zstd: bool = True
) -> dict[str, object]:
    src_name, dst_name = scenario(name, data)
    images = data / "images"
    tgt_layers = extract_layers(images / f"{dst_name}.docker.tar", work)
    src_layers = extract_layers(images / f"{src_name}.docker.tar", work) if src_name else []
    sources = [SourceLayer(diff_id(p), p) for p in src_layers]
    have = {s.diff_id for s in sources}
    docker_save = (images / f"{dst_name}.docker.tar").stat().st_size
    rows = []
    totals = {"patch": 0, "zstd": 0, "built": 0, "build_s": 0.0, "apply_s": 0.0}
    for i, layer in enumerate(tgt_layers):
        did = diff_id(layer)
        if did in have:
            continue
        patch = work / f"{name}-{i}.patch"
        t0 = time.monotonic()
        with open(patch, "wb") as f:
            stats = build_layer_patch(layer, sources, f, config=config)
        t1 = time.monotonic()
        rebuilt = work / "rebuilt.tar"
        apply_rss = apply_in_child(patch, sources, rebuilt)
        t2 = time.monotonic()
        assert diff_id(rebuilt) == did, f"layer {i} not byte-exact"
        rebuilt.unlink()
        old = src_layers[i] if i < len(src_layers) else (src_layers[-1] if src_layers else None)
        zs = zstd_patch_from(old, layer, work) if with_zstd else 0
        size = layer.stat().st_size
        rows.append({"layer": i, "size": size, "patch": stats.patch_size, "zstd": zs,
                     "mode": stats.mode, "build_s": round(t1 - t0, 2),
                     "apply_s": round(t2 - t1, 2), "apply_peak_rss_MiB": apply_rss,
                     "sections": stats.section_bytes,
                     "new_bytes": stats.new_bytes})
        totals["patch"] += stats.patch_size
        totals["zstd"] += zs
        totals["built"] += size
        totals["build_s"] += t1 - t0
        totals["apply_s"] += t2 - t1
        patch.unlink()
        print(f"{name} layer {i}: {size} -> {stats.patch_size} (zstd {zs}) "
              f"build {t1 - t0:.1f}s apply {t2 - t1:.1f}s ({apply_rss} MiB)",
              file=sys.stderr, flush=True)
    mb = totals["built"] / 1e6
    return {
        "scenario": name, "docker_save": docker_save, "layers": rows,
        "patch_bytes": totals["patch"], "zstd_patch_from_bytes": totals["zstd"],
        "patch_pct_of_docker_save": round(100 * totals["patch"] / docker_save, 4),
        "build_MBps": round(mb / max(totals["build_s"], 1e-9), 1),
        "apply_MBps": round(mb / max(totals["apply_s"], 1e-9), 1),
        "build_peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "apply_peak_rss_MiB": max((int(r["apply_peak_rss_MiB"]) for r in rows), default=0),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("/work/benchdata/public"))
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--no-verify", action="store_true", help="skip the builder's self-check")
    ap.add_argument("--no-zstd", action="store_true", help="skip the zstd --patch-from reference")
    ap.add_argument("scenarios", nargs="*", default=["S2", "S3"])
    args = ap.parse_args()
    config = DeltaConfig(verify=not args.no_verify)
    work = args.work or Path(tempfile.mkdtemp(prefix="layer-probe-"))
    work.mkdir(parents=True, exist_ok=True)
    for name in args.scenarios:
        result = probe(name, args.data, work, config, with_zstd=not args.no_zstd)
        json.dump(result, sys.stdout, indent=1)
        print(flush=True)


if __name__ == "__main__":
    main()
