"""What each delivery cost, next to what a plain layer pull would have cost, as a table.

A plain ``docker pull`` moves every gzip layer blob the device lacks (by diff_id),
whole, and starts that layer over when the link drops. deltaport moves one signed
bundle, resumed by Range. :func:`pull_bytes` reads the first from the cloud
registry; the rest is arithmetic on numbers the run collected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.table import Table

from deltaport.cli.common import human_bytes
from deltaport.oci import TransportOptions, open_source


@dataclass(frozen=True)
class Delivery:
    """One image delivered (or not) to one device, and what it cost."""

    device: str
    image: str  # repository:tag
    bundle_bytes: int  # the bundle the hub planned for this device (0: already there)
    link_bytes: int  # bytes that crossed the device's link meanwhile (all traffic)
    image_bytes: int  # the whole image as a pull from scratch moves it (gzip layers)
    pull_bytes: int  # gzip layers this device lacked
    seconds: float  # from the deployment to "present" at the hub
    status: str  # "present", "had it" (already there), "failed: …", "did not arrive"
    verified: bool = False  # set by the final check: registry, hub and deployment agree


def layer_blobs(ref: str, options: TransportOptions) -> dict[str, int]:
    """diff_id → compressed blob size of each layer of REF."""
    with open_source(ref, options) as src:
        return {la.diff_id: la.size for la in src.layers()}


def diff_ids(refs: Iterable[str], options: TransportOptions) -> set[str]:
    """Every layer diff_id of the images REFS."""
    have: set[str] = set()
    for ref in refs:
        with open_source(ref, options) as src:
            have |= {la.diff_id for la in src.layers()}
    return have


def pull_bytes(blobs: dict[str, int], have: set[str]) -> int:
    """Bytes a layer pull moves: the blobs whose diff_id the device does not have."""
    return sum(size for diff_id, size in blobs.items() if diff_id not in have)


def link_seconds(nbytes: int, link_bps: int) -> float:
    """Seconds NBYTES take at LINK_BPS bits per second."""
    return nbytes * 8 / link_bps


def duration(seconds: float) -> str:
    """'4.2 s', '3.5 min', '2.1 h'."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def percent(part: int, whole: int) -> str:
    """PART as a percentage of WHOLE, two decimals."""
    return f"{100 * part / max(whole, 1):.2f}%"


VERIFIED, NOT_VERIFIED = "\u2713", "\u2717"  # check mark, ballot x
LEGEND = (
    "bundle: the signed patch file the hub built for the device (0 B: it had the image).",
    "% of image: the bundle against the whole image as a pull from scratch moves it "
    "(all its gzip layer blobs, as the cloud registry serves them).",
    "over link: every byte that crossed the device's throttled link meanwhile, both ways: "
    "the bundle plus TLS and HTTP overhead, check-ins, status reports and the ranges "
    "resumed after a drop, so it is more than the bundle.",
    f"verified {VERIFIED}: the device registry holds the image under its image ID (config "
    "and every layer's diff_id hashed), and the hub's database and the deployment both "
    f"say present ({NOT_VERIFIED}: they do not).",
    "layer pull: the gzip layers the device lacked (what docker pull moves); pull time at "
    "the link rate if it never dropped.",
)


def _status_word(status: str) -> str:
    """The first word(s) of a status: 'failed: <reason>' -> 'failed'."""
    return status.split(":", 1)[0]


def results_table(deliveries: Sequence[Delivery], link_bps: int) -> Table:
    """One row per device and image: bundle, link, time, status; then the layer pull.

    Every cell is one line (a failure's reason is in :func:`failure_lines`), so the
    table fits a 120-column terminal without wrapping.
    """
    rate = f"{link_bps / 1e6:g} Mbit/s" if link_bps >= 1_000_000 else f"{link_bps / 1e3:g} kbit/s"
    table = Table(title=f"what crossed each device's {rate} link (image: gzip layers)",
                  show_edge=False, pad_edge=False)
    columns = ("device", "image", "bundle", "% of image", "over link", "time", "status",
               "layer pull", "%", "pull time")
    for name in columns:
        table.add_column(name, no_wrap=True, overflow="ellipsis",
                         justify="left" if name in ("device", "image", "status") else "right")
    for d in deliveries:
        ok = d.verified and d.status in ("present", "had it")
        table.add_row(
            d.device,
            d.image,
            human_bytes(d.bundle_bytes),
            percent(d.bundle_bytes, d.image_bytes),
            human_bytes(d.link_bytes),
            duration(d.seconds),
            f"[green]{d.status} {VERIFIED}[/]" if ok
            else f"[red]{_status_word(d.status)} {NOT_VERIFIED}[/]",
            human_bytes(d.pull_bytes),
            percent(d.pull_bytes, d.image_bytes),
            duration(link_seconds(d.pull_bytes, link_bps)),
        )
    return table


def failure_lines(deliveries: Sequence[Delivery]) -> list[str]:
    """'DEVICE IMAGE: <whole status>' for each delivery whose status has a reason."""
    return [f"{d.device} {d.image}: {d.status}" for d in deliveries if ":" in d.status]


def totals(deliveries: Sequence[Delivery]) -> tuple[int, int]:
    """(bundle bytes, layer-pull bytes) summed over DELIVERIES."""
    return sum(d.bundle_bytes for d in deliveries), sum(d.pull_bytes for d in deliveries)
