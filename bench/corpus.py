"""The benchmark corpus as data: images and scenarios read from images.json/scenarios.json.

The corpus is made by ../shared/bench/build.sh; this module only reads its two index
files (each bounded by ``INDEX_LIMIT``) and answers questions about them, such as which
gzip layers a registry pull of the target would send to a device that has the old image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX_LIMIT = 16 << 20  # bytes; images.json for the corpus is a few tens of KB


class CorpusError(Exception):
    """The corpus directory is missing files or its index files are malformed."""


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a corpus image: uncompressed (diff_id, size) and gzip blob size."""

    diff_id: str
    size: int
    gz_size: int
    created_by: str


@dataclass(frozen=True)
class ImageInfo:
    """One corpus image: its docker-save archive and its layers."""

    name: str
    archive: Path
    archive_size: int
    archive_sha256: str
    config_digest: str
    layers: tuple[LayerInfo, ...]

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return tuple(layer.diff_id for layer in self.layers)


@dataclass(frozen=True)
class Scenario:
    """A pair: the image the device has (``old``, None for a first image) and the target."""

    id: str
    old: str | None
    new: str
    desc: str
    large: bool


@dataclass(frozen=True)
class Corpus:
    """Images by name and scenarios in file order."""

    root: Path
    images: dict[str, ImageInfo]
    scenarios: tuple[Scenario, ...]

    def scenario(self, scenario_id: str) -> Scenario:
        for scen in self.scenarios:
            if scen.id == scenario_id:
                return scen
        known = ", ".join(s.id for s in self.scenarios)
        raise CorpusError(f"unknown scenario {scenario_id!r} (corpus has {known})")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CorpusError(f"{path} is missing: is the corpus built (log ends 'corpus-done 0')?")
    if path.stat().st_size > INDEX_LIMIT:
        raise CorpusError(f"{path} is larger than {INDEX_LIMIT} bytes")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise CorpusError(f"{path}: not valid JSON: {exc}") from exc


def _image(root: Path, raw: dict[str, Any]) -> ImageInfo:
    archive = Path(raw["docker_archive"])
    if not archive.is_file():  # the corpus may have been moved: look next to images.json
        archive = root / "images" / archive.name
    layers = tuple(
        LayerInfo(lay["diff_id"], int(lay["size"]), int(lay["gz_size"]), lay.get("created_by", ""))
        for lay in raw["layers"]
    )
    return ImageInfo(
        name=raw["name"],
        archive=archive,
        archive_size=int(raw["docker_archive_size"]),
        archive_sha256=raw["docker_archive_sha256"],
        config_digest=raw["config_digest"],
        layers=layers,
    )


def load_corpus(root: Path) -> Corpus:
    """Read ``root``/images.json and ``root``/scenarios.json.

    Raises:
        CorpusError: a file is missing, too large, not JSON, or lacks a needed field.
    """
    raw_images = _read_json(root / "images.json")
    raw_scen = _read_json(root / "scenarios.json")
    try:
        images = {name: _image(root, info) for name, info in raw_images.items()}
        scenarios = tuple(
            Scenario(s["id"], s.get("old"), s["new"], s.get("desc", ""), bool(s.get("large")))
            for s in raw_scen
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise CorpusError(f"{root}: malformed corpus index: {exc!r}") from exc
    for scen in scenarios:
        for name in (scen.old, scen.new):
            if name is not None and name not in images:
                raise CorpusError(f"scenario {scen.id} names image {name!r} not in images.json")
    return Corpus(root, images, scenarios)


def registry_pull_bytes(new: ImageInfo, old: ImageInfo | None) -> int:
    """Gzip layer bytes a registry pull of ``new`` sends to a device holding ``old``.

    A layer is skipped when the device has its diff_id (as docker/containerd do);
    each distinct missing layer is counted once. Manifest and config are not counted.
    """
    have = set(old.diff_ids) if old is not None else set()
    sent: dict[str, int] = {}
    for layer in new.layers:
        if layer.diff_id not in have:
            sent[layer.diff_id] = layer.gz_size
    return sum(sent.values())
