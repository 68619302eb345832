"""How well ``delta rank`` predicts: estimated vs real bundle bytes, per scenario and layer.

The planner picks each device's source from ``estimate_patch_size``; a wrong estimate
sends the wrong patch. This reads a corpus (``images.json``, ``scenarios.json``) and the
``results.json`` of a ``bench/run.py`` run on it (the real bundle and per-layer patch
bytes), signs every image through the real reader (``docker-archive:``), and reports
estimate / real. Issue 16's target: within ±25 % on S1-S3 of every corpus.

    python bench/rank_probe.py --data /work/benchdata/corpus2 --results /tmp/bench-c2/results.json \
        --json /tmp/rank-c2.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from deltaport.delta.ranking import create_image_signature
from deltaport.delta.signature import (
    ImageSignature,
    dump_image_signature,
    estimate_patch_size,
    load_image_signature,
)

TOLERANCE = 0.25  # issue 16: estimate within ±25 % of the real bundle


def _signature(images: dict[str, Any], name: str, cache: Path | None) -> ImageSignature:
    """The image's signature, made by the real reader; kept in CACHE (signature files)."""
    archive = images[name]["docker_archive"]
    path = cache / f"{images[name]['docker_archive_sha256']}.sig" if cache else None
    if path is not None and path.is_file():
        with path.open("rb") as f:
            return load_image_signature(f)
    sig = create_image_signature(f"docker-archive:{archive}")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            dump_image_signature(sig, f)
    return sig


def probe_scenario(
    scenario: dict[str, Any], images: dict[str, Any], sigs: dict[str, ImageSignature],
    cache: Path | None = None,
) -> dict[str, Any]:
    """Estimated vs real bytes of one scenario, in total and per patched layer."""
    for name in (scenario["old"], scenario["new"]):
        if name not in sigs:
            sigs[name] = _signature(images, name, cache)
    estimate = estimate_patch_size(sigs[scenario["new"]].layers, sigs[scenario["old"]].layers)
    real = scenario["results"]["deltaport"]
    by_diff = {la["diff_id"]: la for la in real["extra"]["summary"]["layers"]}
    layers = [
        {"diff_id": row["diff_id"][:19], "size": row["size"], "estimate": row["estimate"],
         "real": by_diff[row["diff_id"]]["patch_bytes"]}
        for row in estimate.layers
        if row["estimate"] or by_diff[row["diff_id"]]["patch_bytes"]
    ]
    return {
        "estimate": estimate.bytes,
        "real": real["bytes"],
        "ratio": round(estimate.bytes / max(real["bytes"], 1), 3),
        "within": abs(estimate.bytes / max(real["bytes"], 1) - 1) <= TOLERANCE,
        "layers": layers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="corpus dir with images.json")
    parser.add_argument("--results", type=Path, required=True,
                        help="results.json of bench/run.py on that corpus")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--cache", type=Path, help="keep signature files here between runs")
    args = parser.parse_args()
    images = json.loads((args.data / "images.json").read_text())
    results = json.loads(args.results.read_text())
    sigs: dict[str, ImageSignature] = {}
    out: dict[str, Any] = {"corpus": str(args.data), "tolerance": TOLERANCE, "scenarios": {}}
    print("| scenario | estimate | real bundle | estimate / real | within ±25 % |")
    print("|---|---|---|---|---|")
    for sid, scenario in results["scenarios"].items():
        if scenario.get("old") is None or scenario["results"].get("deltaport", {}).get(
            "status") != "ok":
            continue
        row = probe_scenario(scenario, images, sigs, args.cache)
        out["scenarios"][sid] = row
        print(f"| {sid} | {row['estimate']:,} | {row['real']:,} | {row['ratio']} | "
              f"{'yes' if row['within'] else 'no'} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
