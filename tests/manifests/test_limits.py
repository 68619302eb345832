"""Bounded parsing: alias bombs, oversized and too-deep documents fail fast and clearly."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from deltaport.errors import FormatError
from deltaport.limits import MANIFEST_MAX_BYTES, MANIFEST_MAX_DEPTH
from deltaport.manifests import parse_manifest

LEVELS = "abcdefghi"


def bomb(levels: int = 9) -> bytes:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        prev, cur = LEVELS[i - 1], LEVELS[i]
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append(f"services:\n  x:\n    image: nginx\n    command: *{LEVELS[levels - 1]}")
    return "\n".join(lines).encode()


@pytest.mark.parametrize("levels", [9, 20])
def test_alias_bomb_fails_fast_in_bounded_memory(levels: int) -> None:
    data = bomb(min(levels, len(LEVELS)))
    assert len(data) < 600
    tracemalloc.start()
    started = time.monotonic()
    with pytest.raises(FormatError, match="once YAML aliases are expanded"):
        parse_manifest(data, name="bomb.yaml")
    elapsed = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 20 * 1024 * 1024


def test_too_many_aliases() -> None:
    data = b"x: &x 1\nl: [" + b",".join([b"*x"] * 10_001) + b"]\nservices: {a: {image: n}}\n"
    with pytest.raises(FormatError, match="more than 10000 YAML aliases"):
        parse_manifest(data)


def test_recursive_alias() -> None:
    with pytest.raises(FormatError, match="contains itself"):
        parse_manifest(b"a: &a [*a]\nservices: {x: {image: n}}\n")


@pytest.mark.parametrize("opener", [b"[", b"{"])
def test_too_deep_json_and_yaml(opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    inner = b"1" if opener == b"[" else b""
    deep = opener * (MANIFEST_MAX_DEPTH + 5) + inner + closer * (MANIFEST_MAX_DEPTH + 5)
    if opener == b"{":
        deep = b'{"a":' * (MANIFEST_MAX_DEPTH + 5) + b"1" + b"}" * (MANIFEST_MAX_DEPTH + 5)
    with pytest.raises(FormatError, match="nested deeper than"):
        parse_manifest(deep)
    with pytest.raises(FormatError, match="nested deeper than"):
        parse_manifest(b"services: " + b"[" * 100_000)


def test_very_deep_json_does_not_crash() -> None:
    with pytest.raises(FormatError, match="nested deeper than"):
        parse_manifest(b"[" * 200_000 + b"]" * 200_000)


def test_oversized() -> None:
    with pytest.raises(FormatError, match=f"larger than {MANIFEST_MAX_BYTES} bytes"):
        parse_manifest(b"#" * (MANIFEST_MAX_BYTES + 1))


def test_merge_keys_still_work() -> None:
    m = parse_manifest(
        b"x-base: &base {image: reg.io/a:1, restart: always}\n"
        b"services:\n  a:\n    <<: *base\n  b:\n    <<: *base\n    image: reg.io/b:2\n"
    )
    assert m.references == ("reg.io/a:1", "reg.io/b:2")
