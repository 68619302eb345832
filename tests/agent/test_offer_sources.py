"""``GET /bundles`` entries' optional ``sources`` (docs/device-runtime.md §5): parsed, bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deltaport.agent.fetch import load_offer, save_offer
from deltaport.agent.hub import MAX_SOURCES, BundleOffer, parse_bundle_list
from deltaport.agent.runtime.gc import sources_in_flight
from deltaport.errors import FormatError

BASE = "http://hub.test"


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def entry(**extra: Any) -> dict[str, Any]:
    return {"digest": digest(1), "image_id": digest(2), "size": 10, **extra}


def offers(*entries: dict[str, Any]) -> list[BundleOffer]:
    return parse_bundle_list({"bundles": list(entries)}, BASE)


def test_sources_are_parsed_in_order_without_repeats() -> None:
    [offer] = offers(entry(sources=[digest(5), digest(3), digest(5)]))
    assert offer.sources == (digest(5), digest(3))


@pytest.mark.parametrize("doc", [entry(), entry(sources=None), entry(sources=[])])
def test_absent_sources_are_none(doc: dict[str, Any]) -> None:
    assert offers(doc)[0].sources == ()


def test_as_many_sources_as_the_limit_are_taken() -> None:
    many = [digest(i) for i in range(MAX_SOURCES)]
    assert offers(entry(sources=many))[0].sources == tuple(many)


@pytest.mark.parametrize("bad, message", [
    ("sha256:" + "0" * 64, "must be a list"),
    ({"id": digest(1)}, "must be a list"),
    ([digest(i) for i in range(MAX_SOURCES + 1)], "at most 1000"),
    ([digest(1), "sha256:abc"], r"sources\[1\] must be a sha256 image ID"),
    (["SHA256:" + "a" * 64], r"sources\[0\]"),
    (["sha512:" + "a" * 128], r"sources\[0\]"),
    ([7], r"sources\[0\]"),
    ([None], r"sources\[0\]"),
])
def test_malformed_sources_are_refused(bad: Any, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        offers(entry(), entry(sources=bad))


def test_the_sources_in_flight_are_every_offers_sources() -> None:
    found = offers(entry(sources=[digest(3)]), entry(digest=digest(9)),
                   entry(digest=digest(8), sources=[digest(4), digest(3)]))
    assert sources_in_flight(found) == {digest(3), digest(4)}


def test_an_offer_with_sources_round_trips_through_its_saved_json(tmp_path: Path) -> None:
    [offer] = offers(entry(sources=[digest(5), digest(3)]))
    save_offer(tmp_path, offer)
    loaded = load_offer(tmp_path)
    assert loaded == offer and isinstance(loaded.sources, tuple)
    hash(loaded)
