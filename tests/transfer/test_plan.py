"""Chunk plans and the resume computation: pure, with properties checked by Hypothesis."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltaport.errors import FormatError, StorageError
from deltaport.transfer import ByteRange, ChunkPlan, make_plan, ranges_to_fetch
from deltaport.transfer.plan import chunk_count, chunk_ok, sha256_digest

ZERO = "sha256:" + "0" * 64


def plan_of(total: int, chunk: int) -> ChunkPlan:
    return ChunkPlan(total, chunk, [ZERO] * chunk_count(total, chunk))


def test_plan_rejects_wrong_digest_count_and_bad_digests() -> None:
    with pytest.raises(FormatError, match="expected 3"):
        ChunkPlan(10, 4, [ZERO, ZERO])
    with pytest.raises(FormatError, match="not a sha256"):
        ChunkPlan(4, 4, ["md5:abc"])
    with pytest.raises(FormatError):
        ChunkPlan(4, 0, [])


def test_chunk_bounds_last_chunk_shorter() -> None:
    plan = plan_of(10, 4)
    assert [(plan.start(i), plan.end(i)) for i in range(plan.count)] == [(0, 4), (4, 8), (8, 10)]
    assert plan.index_at(9) == 2


def test_chunk_ok_checks_length_and_digest() -> None:
    data = b"abcdefghij"
    plan = ChunkPlan(10, 4, [sha256_digest(data[0:4]), sha256_digest(data[4:8]),
                             sha256_digest(data[8:])])
    assert chunk_ok(plan, 1, b"efgh")
    assert not chunk_ok(plan, 1, b"efgX")
    assert not chunk_ok(plan, 2, b"ij\x00")


def test_ranges_everything_missing_is_one_range() -> None:
    plan = plan_of(10, 4)
    assert ranges_to_fetch(plan, [False] * 3, 0) == [ByteRange(0, 10)]


def test_ranges_corrupt_middle_and_partial_tail() -> None:
    plan = plan_of(40, 4)  # 10 chunks
    good = [True] * 10
    good[3] = False  # corrupt middle chunk
    good[8] = good[9] = False  # file ends inside chunk 8
    assert ranges_to_fetch(plan, good, have=34) == [ByteRange(12, 16), ByteRange(34, 40)]


def test_ranges_all_good_is_nothing() -> None:
    assert ranges_to_fetch(plan_of(9, 4), [True] * 3, 9) == []


@given(
    total=st.integers(0, 200),
    chunk=st.integers(1, 32),
    data=st.data(),
)
def test_ranges_cover_exactly_what_is_needed(total: int, chunk: int, data: st.DataObject) -> None:
    plan = plan_of(total, chunk)
    good = data.draw(st.lists(st.booleans(), min_size=plan.count, max_size=plan.count))
    have = data.draw(st.integers(0, total + 5))
    ranges = ranges_to_fetch(plan, good, have)
    covered: set[int] = set()
    for r in ranges:
        assert r.start < r.end
        covered.update(range(r.start, r.end))
    assert all(a.end < b.start for a, b in pairwise(ranges))
    for offset in range(total):
        index = plan.index_at(offset)
        kept_prefix = plan.start(index) <= offset < min(have, total) and not good[index] and (
            plan.start(index) < min(have, total) < plan.end(index)
        )
        needed = not good[index] and not kept_prefix
        assert (offset in covered) == needed, (offset, good, have)


def test_make_plan_of_a_region(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10
    path = tmp_path / "f"
    path.write_bytes(data)
    plan = make_plan(path, 100, region_offset=50, region_size=250)
    assert plan.total_size == 250 and plan.region_offset == 50
    assert plan.chunk_digests == (sha256_digest(data[50:150]), sha256_digest(data[150:250]),
                                  sha256_digest(data[250:300]))
    assert make_plan(path, 1000).total_size == len(data)
    with pytest.raises(StorageError):
        make_plan(path, 100, region_offset=2500, region_size=100)
