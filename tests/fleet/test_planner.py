"""The planner: right bundles for each device, each bundle once, reuse across deployments."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltaport.errors import MissingSourceError, StateError
from deltaport.pipelines.interfaces import ImageInfo
from deltaport.pipelines.planner import (
    DeviceInventory,
    bundle_key,
    plan_deployment,
    shared_layer_ranker,
)
from tests.fleet.fakes import identity


def info(name: str, layers: Sequence[str]) -> ImageInfo:
    ident = identity(name, layers)
    return ImageInfo(name, ident.image_id, ident.diff_ids, ident.layer_sizes)


BASE = info("base:1", ["os"])
APP1 = info("app:1", ["os", "rt", "app1"])
APP2 = info("app:2", ["os", "rt", "app2"])
WEB1 = info("web:1", ["os", "nginx", "web1"])
WEB2 = info("web:2", ["os", "nginx", "web2"])
ALL = [BASE, APP1, APP2, WEB1, WEB2]
CATALOG = {i.image_id: i for i in ALL}


def inv(device: str, *images: ImageInfo, moving: Sequence[ImageInfo] = ()) -> DeviceInventory:
    return DeviceInventory(
        device, frozenset(i.image_id for i in images), frozenset(i.image_id for i in moving)
    )


def test_three_devices_share_what_they_can() -> None:
    devices = [inv("a", APP1, WEB1), inv("b", APP1, WEB1), inv("c", BASE), inv("d", APP2, WEB2)]
    plan = plan_deployment(devices, [APP2, WEB2], CATALOG, shared_layer_ranker)
    by_device = {p.device: p for p in plan.devices}
    assert by_device["d"].bundle_keys == () and set(by_device["d"].present) == {
        APP2.image_id,
        WEB2.image_id,
    }
    assert by_device["a"].bundle_keys == by_device["b"].bundle_keys  # shared
    assert len(by_device["a"].bundle_keys) == 2
    assert not set(by_device["c"].bundle_keys) & set(by_device["a"].bundle_keys)
    assert len(plan.bundles) == 4 and len(plan.to_build) == 4
    app_bundle = next(b for b in plan.bundles if b.target == APP2 and "a" in b.devices)
    assert app_bundle.devices == ("a", "b")
    assert set(APP1.diff_ids) <= set(app_bundle.sources)


def test_in_transit_is_waited_for_not_resent() -> None:
    plan = plan_deployment([inv("a", APP1, moving=[APP2])], [APP2], CATALOG, shared_layer_ranker)
    assert plan.nothing_to_send and plan.devices[0].waiting == (APP2.image_id,)


def test_existing_bundles_are_reused_not_rebuilt() -> None:
    devices = [inv("a", APP1)]
    first = plan_deployment(devices, [APP2], CATALOG, shared_layer_ranker)
    again = plan_deployment(
        devices, [APP2], CATALOG, shared_layer_ranker, {b.key for b in first.bundles}
    )
    assert again.bundles[0].key == first.bundles[0].key
    assert again.to_build == () and again.bundles[0].exists


def test_ranker_runs_once_per_distinct_inventory() -> None:
    calls = []

    def rank(t: ImageInfo, av: Sequence[ImageInfo]) -> tuple[str, ...]:
        calls.append(t.image_id)
        return shared_layer_ranker(t, av)

    devices = [inv(f"d{i}", APP1 if i % 2 else WEB1) for i in range(1000)]
    plan = plan_deployment(devices, [APP2, WEB2], CATALOG, rank)
    assert len(calls) == 4
    assert len(plan.devices) == 1000 and len(plan.bundles) == 4


def test_unregistered_image_on_device() -> None:
    stranger = DeviceInventory("x", frozenset({"sha256:" + "0" * 64}))
    with pytest.raises(StateError, match="unregistered"):
        plan_deployment([stranger], [APP2], CATALOG, shared_layer_ranker)


def test_ranker_choosing_absent_layers_is_refused() -> None:
    def greedy(t: ImageInfo, av: Sequence[ImageInfo]) -> tuple[str, ...]:
        return WEB2.diff_ids

    with pytest.raises(MissingSourceError) as err:
        plan_deployment([inv("a", APP1)], [APP2], CATALOG, greedy)
    assert set(err.value.missing) == set(WEB2.diff_ids) - set(APP1.diff_ids)


def test_bundle_key_depends_on_targets_and_sources_only() -> None:
    assert bundle_key(["t"], ["b", "a", "a"]) == bundle_key(["t"], ["a", "b"])
    assert bundle_key(["t"], ["a"]) != bundle_key(["t"], ["a", "b"])
    assert bundle_key(["t"], ["a"]) != bundle_key(["u"], ["a"])


def test_a_bundle_packs_its_config_against_an_image_each_of_its_devices_has() -> None:
    """Same layers under another config (a re-tagged build with a new label): a device
    holding that image gets its own bundle, whose config base is the image it has."""
    relabelled = ImageInfo("app:1-relabel", "sha256:" + "e" * 64, APP1.diff_ids,
                           APP1.layer_sizes)
    catalog = {**CATALOG, relabelled.image_id: relabelled}
    plan = plan_deployment([inv("a", APP1), inv("b", relabelled), inv("c", APP1)], [APP2],
                           catalog, shared_layer_ranker)
    by_devices = {b.devices: b for b in plan.bundles}
    assert set(by_devices) == {("a", "c"), ("b",)}
    assert by_devices[("a", "c")].config_base == APP1.image_id
    assert by_devices[("b",)].config_base == relabelled.image_id
    assert by_devices[("a", "c")].sources == by_devices[("b",)].sources
    assert by_devices[("a", "c")].key != by_devices[("b",)].key
    alone = plan_deployment([inv("d")], [APP2], CATALOG, shared_layer_ranker)
    assert alone.bundles[0].config_base is None  # nothing on the device: a plain config
    assert bundle_key(["t"], ["a"], config_base="x") != bundle_key(["t"], ["a"])


# --- properties ----------------------------------------------------------------

LAYER_NAMES = [f"l{i}" for i in range(8)]
images_st = st.lists(
    st.lists(st.sampled_from(LAYER_NAMES), min_size=1, max_size=4, unique=True),
    min_size=2,
    max_size=7,
).map(lambda layer_sets: [info(f"img{i}:1", ls) for i, ls in enumerate(layer_sets)])


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[list[ImageInfo], list[DeviceInventory], list[ImageInfo], set[str]]:
    images = draw(images_st)
    ids = [i.image_id for i in images]
    n = draw(st.integers(1, 25))
    devices = []
    for d in range(n):
        present = draw(st.sets(st.sampled_from(ids), max_size=4))
        moving = draw(st.sets(st.sampled_from(ids), max_size=2)) - present
        devices.append(DeviceInventory(f"dev{d}", frozenset(present), frozenset(moving)))
    targets = draw(st.lists(st.sampled_from(images), min_size=1, max_size=4))
    existing = draw(st.sets(st.text("ab0123456789", min_size=1, max_size=3), max_size=3))
    return images, devices, targets, existing


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_plan_properties(
    scenario: tuple[list[ImageInfo], list[DeviceInventory], list[ImageInfo], set[str]],
) -> None:
    images, devices, targets, existing = scenario
    catalog = {i.image_id: i for i in images}
    plan = plan_deployment(devices, targets, catalog, shared_layer_ranker, existing)
    bundles = {b.key: b for b in plan.bundles}
    # no bundle twice: keys unique, and each to-build key not already built
    assert len(bundles) == len(plan.bundles)
    assert all(b.key not in existing for b in plan.to_build)
    assert len({b.key for b in plan.to_build}) == len(plan.to_build)
    plans = {p.device: p for p in plan.devices}
    assert set(plans) == {d.device for d in devices}
    for d in devices:
        p = plans[d.device]
        have_layers = {x for i in d.present for x in catalog[i].diff_ids}
        sent_targets = set()
        for key in p.bundle_keys:
            b = bundles[key]
            # every device's bundle reads only sources the device has
            assert set(b.sources) <= have_layers
            assert d.device in b.devices
            sent_targets.add(b.target.image_id)
        # every target ends up present, in transit, or in one of its bundles - exactly once
        for t in {t.image_id for t in targets}:
            places = [t in d.present, t in d.in_transit and t not in d.present, t in sent_targets]
            assert sum(places) == 1
    # same inventory ⇒ same bundles
    for a in devices:
        for other in devices:
            if (a.present, a.in_transit) == (other.present, other.in_transit):
                assert plans[a.device].bundle_keys == plans[other.device].bundle_keys
