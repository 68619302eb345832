"""The layer patch cache: a patch built once is reused, intact, and the folder stays bounded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from deltaport.delta.image import apply_image_delta, create_image_delta
from deltaport.delta.model import DeltaConfig
from deltaport.delta.patchcache import PatchCache, patch_key
from deltaport.oci import open_source
from tests.image_delta.test_image_delta import OPTS, _push


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    root = tmp_path_factory.mktemp("layouts")
    refs = {v: f"oci:{root / 'app'}:v{v}" for v in (1, 2)}
    for version, ref in refs.items():
        _push(ref, version)
    return refs


def _patched(summary_json: dict[str, Any]) -> list[dict[str, Any]]:
    layers = summary_json["layers"]
    assert isinstance(layers, list)
    return [la for la in layers if la["encoding"] != "source"]


def test_second_bundle_reuses_every_patch_and_is_byte_identical(
    tmp_path: Path, images: dict[int, str]
) -> None:
    cache = PatchCache(tmp_path / "cache")
    first = create_image_delta(images[2], [images[1]], tmp_path / "a.dpb", patch_cache=cache)
    assert _patched(first.to_json()) and not any(
        la["stats"].get("cached") for la in _patched(first.to_json())
    )
    assert len(list((tmp_path / "cache").glob("*.patch"))) == len(_patched(first.to_json()))
    second = create_image_delta(images[2], [images[1]], tmp_path / "b.dpb", patch_cache=cache)
    assert all(la["stats"]["cached"] for la in _patched(second.to_json()))
    assert (tmp_path / "a.dpb").read_bytes() == (tmp_path / "b.dpb").read_bytes()
    out = tmp_path / "rebuilt"
    apply_image_delta(tmp_path / "b.dpb", [images[1]], f"oci:{out}:v2", options=OPTS)
    with open_source(f"oci:{out}:v2", OPTS) as rebuilt, open_source(images[2], OPTS) as want:
        assert rebuilt.image_id() == want.image_id()


def test_first_image_layers_are_shared_by_later_self_contained_bundles(
    tmp_path: Path, images: dict[int, str]
) -> None:
    cache = PatchCache(tmp_path / "cache")
    create_image_delta(images[1], [], tmp_path / "v1.dpb", patch_cache=cache)
    v2 = create_image_delta(images[2], [], tmp_path / "v2.dpb", patch_cache=cache).to_json()
    cached = [bool(la["stats"].get("cached")) for la in _patched(v2)]
    assert cached == [True, False, False]  # the base layer is the same in v1 and v2


def test_damaged_entry_is_rebuilt_not_used(tmp_path: Path, images: dict[int, str]) -> None:
    cache = PatchCache(tmp_path / "cache")
    create_image_delta(images[2], [images[1]], tmp_path / "a.dpb", patch_cache=cache)
    for patch in (tmp_path / "cache").glob("*.patch"):
        data = bytearray(patch.read_bytes())
        data[len(data) // 2] ^= 0xFF
        patch.write_bytes(bytes(data))
    again = create_image_delta(images[2], [images[1]], tmp_path / "b.dpb", patch_cache=cache)
    assert not any(la["stats"].get("cached") for la in _patched(again.to_json()))
    assert (tmp_path / "a.dpb").read_bytes() == (tmp_path / "b.dpb").read_bytes()


def test_key_depends_on_target_sources_and_config_but_not_source_order() -> None:
    base = patch_key("sha256:t", ["sha256:a", "sha256:b"], DeltaConfig())
    assert base == patch_key("sha256:t", ["sha256:b", "sha256:a"], DeltaConfig())
    assert base != patch_key("sha256:u", ["sha256:a", "sha256:b"], DeltaConfig())
    assert base != patch_key("sha256:t", ["sha256:a"], DeltaConfig())
    assert base != patch_key("sha256:t", ["sha256:a", "sha256:b"], DeltaConfig(zstd_level=3))


def test_trim_drops_least_recently_used_first(tmp_path: Path) -> None:
    roomy = PatchCache(tmp_path / "cache")
    src = tmp_path / "p"
    for i, key in enumerate(("k1", "k2", "k3")):
        src.write_bytes(bytes([i]) * 1000)
        roomy.put(key, src, {"target_size": 1000})
        meta = tmp_path / "cache" / f"{key}.json"
        os.utime(meta, (1_000_000 + i, 1_000_000 + i))  # used in the order k1, k2, k3
    cache = PatchCache(tmp_path / "cache", max_bytes=2500)
    assert cache.get("k1") is not None  # k1 is now the most recently used
    cache.trim()
    assert cache.get("k2") is None and cache.get("k1") is not None
    assert cache.get("k3") is not None
    assert json.loads((tmp_path / "cache" / "k3.json").read_text())["size"] == 1000
