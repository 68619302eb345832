"""The deployment planner: which device needs which image, from which sources, in which bundle.

Pure: takes the devices' inventories, the images a deployment needs, a source-ranking
function and the keys of bundles already built, and returns a :class:`Plan`. No I/O.

Rules:

- An image already ``present`` on a device costs nothing; one already ``in_transit``
  is waited for, not re-sent.
- Each missing image gets one bundle rebuilding it from source layers the device has
  (chosen by the ranker among all layers of all images on the device).
- Devices whose bundle would be identical (same target, same chosen sources) share
  it: the bundle key is the hash of the target image IDs and the source diff_ids, so
  a bundle is built at most once, and never again if an earlier deployment built it.
- The ranker runs once per distinct (target, inventory) pair, not once per device:
  fleets have few distinct inventories, which keeps 100,000 devices fast.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from deltaport.errors import MissingSourceError, StateError
from deltaport.pipelines.interfaces import ImageInfo

BUNDLE_KEY_VERSION = 3  # bump when bundles built from the same inputs would differ
# 2: the signer is part of the key (a bundle is reused only when signed by the key in use)
# 3: so is the config base, the device image whose config the target config is packed
#    against (deltaport.delta.configpack): a bundle goes only to devices that have it
UNSIGNED = "unsigned"  # the signer of a bundle built without a signing key

RankFn = Callable[[ImageInfo, Sequence[ImageInfo]], tuple[str, ...]]


@dataclass(frozen=True)
class DeviceInventory:
    """What one device has (image IDs present) and what is already on its way."""

    device: str
    present: frozenset[str]
    in_transit: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PlannedBundle:
    """One bundle: rebuild TARGET from SOURCES; sent to DEVICES."""

    key: str
    target: ImageInfo
    sources: tuple[str, ...]  # sorted diff_ids
    devices: tuple[str, ...]
    exists: bool  # built by an earlier deployment: reuse, do not build
    config_base: str | None = None  # image ID every device of the bundle has, or None


@dataclass(frozen=True)
class DevicePlan:
    """What happens on one device: bundles it gets, images it has or is waiting for."""

    device: str
    bundle_keys: tuple[str, ...]
    present: tuple[str, ...]  # target image IDs already there
    waiting: tuple[str, ...]  # target image IDs already in transit


@dataclass(frozen=True)
class Plan:
    """The whole deployment plan."""

    targets: tuple[ImageInfo, ...]
    bundles: tuple[PlannedBundle, ...]
    devices: tuple[DevicePlan, ...]

    @property
    def to_build(self) -> tuple[PlannedBundle, ...]:
        """Bundles that no earlier deployment built."""
        return tuple(b for b in self.bundles if not b.exists)

    @property
    def nothing_to_send(self) -> bool:
        """True when every device has (or is about to get) every target already."""
        return not self.bundles


def bundle_key(target_image_ids: Iterable[str], sources: Iterable[str],
               signer: str = UNSIGNED, config_base: str | None = None) -> str:
    """The identity of a bundle: same targets from same sources, same signer and same
    config base → same bundle.

    SIGNER is the signing key's id: after a key change (or when a key is first added)
    bundles are built again, never offered with a signature devices no longer trust.
    CONFIG_BASE is the image the target config is packed against: a device with the
    same source layers under another image gets another bundle.
    """
    doc = {
        "v": BUNDLE_KEY_VERSION,
        "targets": sorted(target_image_ids),
        "sources": sorted(set(sources)),
        "signer": signer,
        "config_base": config_base,
    }
    return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()


def plan_deployment(
    inventories: Sequence[DeviceInventory],
    targets: Sequence[ImageInfo],
    catalog: Mapping[str, ImageInfo],
    rank: RankFn,
    existing_keys: Collection[str] = frozenset(),
    signer: str = UNSIGNED,
) -> Plan:
    """Plan a deployment of TARGETS to the devices described by INVENTORIES.

    CATALOG maps image IDs to registered images (every image a device has must be in
    it). RANK chooses source diff_ids for a target among a device's images.

    Raises:
        StateError: a device has an image the catalog does not know.
        MissingSourceError: RANK chose a source layer the device does not have.
    """
    unique_targets = _dedupe_targets(targets)
    by_inventory: dict[tuple[frozenset[str], frozenset[str]], list[str]] = defaultdict(list)
    for inv in inventories:
        by_inventory[(inv.present, inv.in_transit)].append(inv.device)
    bundle_devices: dict[str, list[str]] = defaultdict(list)
    bundle_info: dict[str, tuple[ImageInfo, tuple[str, ...], str | None]] = {}
    device_plans: list[DevicePlan] = []
    for (present, in_transit), devices in by_inventory.items():
        choice = _plan_inventory(present, in_transit, unique_targets, catalog, rank, signer)
        for key, target, sources, base in choice.bundles:
            bundle_info[key] = (target, sources, base)
            bundle_devices[key].extend(devices)
        device_plans.extend(
            DevicePlan(d, choice.keys, choice.present, choice.waiting) for d in devices
        )
    bundles = tuple(
        PlannedBundle(key, t, s, tuple(bundle_devices[key]), key in existing_keys, base)
        for key, (t, s, base) in bundle_info.items()
    )
    return Plan(targets=unique_targets, bundles=bundles, devices=tuple(device_plans))


@dataclass(frozen=True)
class _InventoryChoice:
    bundles: tuple[tuple[str, ImageInfo, tuple[str, ...], str | None], ...]
    keys: tuple[str, ...]
    present: tuple[str, ...]
    waiting: tuple[str, ...]


def _plan_inventory(
    present: frozenset[str],
    in_transit: frozenset[str],
    targets: Sequence[ImageInfo],
    catalog: Mapping[str, ImageInfo],
    rank: RankFn,
    signer: str,
) -> _InventoryChoice:
    """Plan for every device sharing one inventory."""
    available = _available_images(present, catalog)
    layers = frozenset(d for img in available for d in img.diff_ids)
    bundles = []
    have, waiting = [], []
    for target in targets:
        if target.image_id in present:
            have.append(target.image_id)
        elif target.image_id in in_transit:
            waiting.append(target.image_id)
        else:
            sources = _checked_sources(target, available, layers, rank)
            base = config_base(target, available, sources)
            key = bundle_key([target.image_id], sources, signer, base)
            bundles.append((key, target, sources, base))
    return _InventoryChoice(
        bundles=tuple(bundles),
        keys=tuple(k for k, _, _, _ in bundles),
        present=tuple(have),
        waiting=tuple(waiting),
    )


def _available_images(present: frozenset[str], catalog: Mapping[str, ImageInfo]) -> list[ImageInfo]:
    unknown = sorted(i for i in present if i not in catalog)
    if unknown:
        raise StateError(f"device inventory names unregistered images: {', '.join(unknown)}")
    return sorted((catalog[i] for i in present), key=lambda img: img.image_id)


def _checked_sources(
    target: ImageInfo, available: Sequence[ImageInfo], layers: frozenset[str], rank: RankFn
) -> tuple[str, ...]:
    sources = tuple(sorted(set(rank(target, available))))
    missing = [s for s in sources if s not in layers]
    if missing:
        raise MissingSourceError(
            f"source ranking for {target.name} chose layers the device lacks", missing
        )
    return sources


def config_base(target: ImageInfo, available: Sequence[ImageInfo],
                sources: Sequence[str]) -> str | None:
    """The image the target config is packed against: of the device's images made only
    of chosen sources, the one sharing most layers with the target (its likely previous
    version; ties to the lowest image ID); None when there is none."""
    chosen = set(sources)
    wanted = set(target.diff_ids)
    holders = sorted((img for img in available if img.diff_ids and set(img.diff_ids) <= chosen),
                     key=lambda img: img.image_id)
    best = max(holders, key=lambda img: len(wanted & set(img.diff_ids)), default=None)
    return best.image_id if best is not None else None  # max(): the first of equals


def _dedupe_targets(targets: Sequence[ImageInfo]) -> tuple[ImageInfo, ...]:
    seen: dict[str, ImageInfo] = {}
    for t in targets:
        seen.setdefault(t.image_id, t)
    return tuple(seen.values())


def shared_layer_ranker(target: ImageInfo, available: Sequence[ImageInfo]) -> tuple[str, ...]:
    """A simple ranking: every layer on the device the target also has, plus the top
    layers of the available image sharing most layers with the target (its likely
    previous version). Used when no signature-based ranker is plugged in, and in the
    planning benchmark.
    """
    wanted = set(target.diff_ids)
    have = {d for img in available for d in img.diff_ids}
    chosen = wanted & have
    best = max(
        available, key=lambda img: (len(wanted & set(img.diff_ids)), img.image_id), default=None
    )
    if best is not None:
        chosen.update(best.diff_ids)
    return tuple(sorted(chosen))
