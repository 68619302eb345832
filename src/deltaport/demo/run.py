"""`deltaport demo`: a real delta deployment, end to end, on this machine.

Starts two real Docker Distribution registries (the cloud registry and a device's
local registry), builds v1 and v2 of a realistic image, puts v1 on the device, then
ships v2 as a signed bundle built from what the device has, rebuilds it on the device
side into the device registry, verifies it (deltaport and skopeo must agree on the
image ID) and shows what crossed the link compared with a plain layer pull.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from deltaport.bundle import generate_keypair, load_private_key, load_public_key
from deltaport.cli.common import human_bytes
from deltaport.delta.image import apply_image_delta, create_image_delta
from deltaport.demo.images import write_demo_image
from deltaport.demo.services import Registry, run_registry
from deltaport.errors import IntegrityError
from deltaport.oci import TransportOptions, open_source

LINK_BITS_PER_SECOND = 1_000_000


@dataclass(frozen=True)
class Shipment:
    """One image delivered to the device, and what it cost."""

    image: str
    bundle_bytes: int
    pull_bytes: int
    image_bytes: int
    verified: bool


def _link_time(nbytes: int) -> str:
    seconds = nbytes * 8 / LINK_BITS_PER_SECOND
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _pull_bytes(ref: str, have: set[str], options: TransportOptions) -> int:
    """Compressed bytes a `docker pull` of REF would move to a device with layers HAVE."""
    with open_source(ref, options) as src:
        return sum(la.size for la in src.layers() if la.diff_id not in have)


def _diff_ids(ref: str, options: TransportOptions) -> set[str]:
    with open_source(ref, options) as src:
        return {la.diff_id for la in src.layers()}


def _skopeo_image_id(ref: str) -> str | None:
    """The image ID skopeo reads from REF (None when skopeo is not installed)."""
    if shutil.which("skopeo") is None:
        return None
    raw = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", ref],
        check=True, capture_output=True,
    ).stdout
    return str(json.loads(raw)["config"]["digest"])


@contextmanager
def _registries(work: Path) -> Iterator[tuple[Registry, Registry]]:
    with run_registry(work / "cloud") as cloud, run_registry(work / "device") as device:
        yield cloud, device


def _ship(
    console: Console,
    name: str,
    cloud_ref: str,
    sources_cloud: list[str],
    sources_device: list[str],
    device_ref: str,
    work: Path,
    options: TransportOptions,
) -> Shipment:
    key = load_private_key(work / "keys" / "deltaport.key")
    pub = load_public_key(work / "keys" / "deltaport.pub")
    bundle = work / "bundles" / f"{name.replace('/', '_').replace(':', '-')}.bundle"
    bundle.parent.mkdir(exist_ok=True)
    t0 = time.monotonic()
    summary = create_image_delta(cloud_ref, sources_cloud, bundle, signing_key=key, options=options)
    t1 = time.monotonic()
    console.print(
        f"  built bundle for [bold]{name}[/]: {human_bytes(summary.bundle_bytes)} "
        f"in {t1 - t0:.1f} s"
    )
    have: set[str] = set()
    for ref in sources_device:
        have |= _diff_ids(ref, options)
    result = apply_image_delta(bundle, sources_device, device_ref, trusted_keys=[pub],
                               options=options)
    console.print(f"  device rebuilt {name} in {time.monotonic() - t1:.1f} s, verified by digest")
    skopeo_id = _skopeo_image_id(device_ref.replace("docker://", "docker://", 1))
    verified = result.image_id == summary.image_id and skopeo_id in (None, summary.image_id)
    if skopeo_id is not None:
        console.print(f"  skopeo reads image ID {skopeo_id[:19]}… from the device registry")
    pull = _pull_bytes(cloud_ref, have, options)
    return Shipment(name, summary.bundle_bytes, pull, summary.target_size, verified)


def _table(shipments: list[Shipment]) -> Table:
    table = Table(title="what crossed the 1 Mbit/s link (image size: uncompressed layers)")
    for col in ("image", "bundle", "% of image", "time", "layer pull", "pull time", "status"):
        table.add_column(col, justify="left" if col in ("image", "status") else "right")
    for s in shipments:
        table.add_row(
            s.image,
            human_bytes(s.bundle_bytes),
            f"{100 * s.bundle_bytes / max(s.image_bytes, 1):.2f}%",
            _link_time(s.bundle_bytes),
            human_bytes(s.pull_bytes),
            _link_time(s.pull_bytes),
            "[green]present, verified[/]" if s.verified else "[red]FAILED[/]",
        )
    return table


def run_demo(console: Console, keep: Path | None = None) -> list[Shipment]:
    """Run the demo; raises IntegrityError if any image did not arrive verified."""
    options = TransportOptions()
    with tempfile.TemporaryDirectory(prefix="deltaport-demo-") as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        generate_keypair(work / "keys")
        with _registries(work) as (cloud, device):
            console.print(f"cloud registry {cloud.host}, device registry {device.host}")
            v1, v2 = cloud.ref("demo/app:v1"), cloud.ref("demo/app:v2")
            console.print("building demo images v1 and v2 from this machine's files …")
            write_demo_image(1, v1, options)
            write_demo_image(2, v2, options)
            console.print("[bold]1. first image[/]: the device has nothing")
            first = _ship(console, "demo/app:v1", v1, [], [], device.ref("demo/app:v1"),
                          work, options)
            console.print("[bold]2. update[/]: the device has v1")
            update = _ship(console, "demo/app:v2", v2, [v1], [device.ref("demo/app:v1")],
                           device.ref("demo/app:v2"), work, options)
            shipments = [first, update]
            console.print(_table(shipments))
    failed = [s.image for s in shipments if not s.verified]
    if failed:
        raise IntegrityError("images did not arrive verified: " + ", ".join(failed))
    return shipments
