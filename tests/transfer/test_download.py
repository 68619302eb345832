"""download() and fetch_range() against a real HTTP server that misbehaves on request."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from deltaport.errors import (
    AuthError,
    IntegrityError,
    NotFoundError,
    StorageError,
    TransferError,
)
from deltaport.transfer import download, fetch_range, make_plan, part_path
from deltaport.transfer.partfile import PartFile
from tests.transfer.conftest import CHUNK, FILE_SIZE, Served, fast_config


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ranges_asked(served: Served) -> list[str | None]:
    return [r.range for r in served.server.requests]


def test_planned_download_is_intact_and_fetches_each_byte_once(
    served: Served, tmp_path: Path
) -> None:
    dest = tmp_path / "out" / "bundle.bin"
    seen: list[tuple[int, int]] = []
    result = download(served.url, dest, served.plan, config=fast_config(),
                      progress=lambda done, total: seen.append((done, total)))
    assert dest.read_bytes() == served.content
    assert not part_path(dest).exists()
    assert result.bytes_fetched == FILE_SIZE and result.bytes_reused == 0
    assert result.total_size == FILE_SIZE and result.requests == 1 and result.retries == 0
    assert ranges_asked(served) == [f"bytes=0-{FILE_SIZE - 1}"]
    assert seen[-1] == (FILE_SIZE, FILE_SIZE)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_without_plan_checks_size_and_sha256(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "whole.bin"
    result = download(served.url, dest, None, config=fast_config(),
                      expected_sha256=sha256(served.content))
    assert dest.read_bytes() == served.content and result.total_size == FILE_SIZE
    assert ranges_asked(served) == ["bytes=0-"]


def test_without_plan_wrong_sha256_is_integrity_error_and_drops_the_part(
    served: Served, tmp_path: Path
) -> None:
    dest = tmp_path / "whole.bin"
    with pytest.raises(IntegrityError, match="sha256"):
        download(served.url, dest, None, config=fast_config(), expected_sha256=sha256(b"x"))
    assert not dest.exists() and not part_path(dest).exists()


def test_without_plan_wrong_size_is_integrity_error(served: Served, tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match=f"has {FILE_SIZE} bytes, expected 1000"):
        download(served.url, tmp_path / "w.bin", None, config=fast_config(), expected_size=1000)


def test_without_plan_resumes_from_the_part_file(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "whole.bin"
    part_path(dest).write_bytes(served.content[:300_000])
    result = download(served.url, dest, None, config=fast_config())
    assert dest.read_bytes() == served.content
    assert ranges_asked(served) == ["bytes=300000-"]
    assert result.bytes_fetched == FILE_SIZE - 300_000 and result.bytes_reused == 300_000


def test_503_for_a_while_backs_off_then_succeeds(served: Served, tmp_path: Path) -> None:
    served.server.fail_next(5, 503)
    config = fast_config(backoff_initial=0.05, backoff_max=1.0)
    started = time.monotonic()
    result = download(served.url, tmp_path / "b.bin", served.plan, config=config)
    elapsed = time.monotonic() - started
    assert (tmp_path / "b.bin").read_bytes() == served.content
    assert result.retries == 5 and result.requests == 6
    assert elapsed >= 0.05 + 0.1 + 0.2 + 0.4 + 0.8  # exponential, jitter off
    assert [r.status for r in served.server.requests] == [503] * 5 + [206]


def test_retry_after_is_honoured(served: Served, tmp_path: Path) -> None:
    served.server.fail_next(1, 429, retry_after="1")
    started = time.monotonic()
    download(served.url, tmp_path / "b.bin", served.plan, config=fast_config(backoff_max=5))
    assert time.monotonic() - started >= 1.0


def test_gives_up_after_max_attempts_without_progress(served: Served, tmp_path: Path) -> None:
    served.server.fail_every = 1
    with pytest.raises(TransferError, match="3 attempts in a row") as info:
        download(served.url, tmp_path / "b.bin", served.plan, config=fast_config(max_attempts=3))
    assert "503" in str(info.value)
    assert len(served.server.requests) == 3


def test_gives_up_after_max_duration(served: Served, tmp_path: Path) -> None:
    served.server.fail_every = 1
    started = time.monotonic()
    with pytest.raises(TransferError, match="max_duration"):
        download(served.url, tmp_path / "b.bin", served.plan,
                 config=fast_config(max_duration=0.5))
    assert 0.5 <= time.monotonic() - started < 10


def test_404_fails_at_once_with_a_clear_message(served: Served, tmp_path: Path) -> None:
    url = served.server.url_for("nope.bin")
    started = time.monotonic()
    with pytest.raises(NotFoundError, match=r"GET .*/nope.bin: 404 .*does not have this file"):
        download(url, tmp_path / "n.bin", None, config=fast_config(backoff_initial=5))
    assert time.monotonic() - started < 4  # no backoff sleep happened
    assert len(served.server.requests) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_fail_at_once(served: Served, tmp_path: Path, status: int) -> None:
    served.server.fail_next(1, status)
    with pytest.raises(AuthError, match="credentials") as info:
        download(served.url, tmp_path / "a.bin", served.plan, config=fast_config())
    assert info.value.status == status and len(served.server.requests) == 1


def test_a_chunk_corrupted_once_is_the_only_one_fetched_again(
    served: Served, tmp_path: Path
) -> None:
    bad = 5  # corrupt a few bytes inside chunk 5
    served.server.corrupt_once("bundle.bin", bad * CHUNK + 1000, 16)
    dest = tmp_path / "b.bin"
    result = download(served.url, dest, served.plan, config=fast_config())
    assert dest.read_bytes() == served.content
    assert result.chunks_refetched == 1
    assert ranges_asked(served) == [f"bytes=0-{FILE_SIZE - 1}",
                                    f"bytes={bad * CHUNK}-{(bad + 1) * CHUNK - 1}"]
    assert result.bytes_fetched == FILE_SIZE + CHUNK  # exactly one chunk twice


def test_a_chunk_corrupt_every_time_is_an_integrity_error(
    served: Served, tmp_path: Path
) -> None:
    for _ in range(3):
        served.server.corrupt_once("bundle.bin", 2 * CHUNK, 1)
    with pytest.raises(IntegrityError, match=r"chunk 2 .* failed its digest 3 times"):
        download(served.url, tmp_path / "b.bin", served.plan,
                 config=fast_config(max_chunk_attempts=3))
    assert len(served.server.requests) == 3


def test_partial_file_with_corrupt_middle_is_repaired_on_resume(
    served: Served, tmp_path: Path
) -> None:
    dest = tmp_path / "b.bin"
    have = 10 * CHUNK + 5000  # ten chunks and a piece of the eleventh on disk
    damaged = bytearray(served.content[:have])
    damaged[3 * CHUNK + 77] ^= 0x01  # a flipped bit in chunk 3
    part_path(dest).write_bytes(damaged)
    result = download(served.url, dest, served.plan, config=fast_config())
    assert dest.read_bytes() == served.content
    assert ranges_asked(served) == [f"bytes={3 * CHUNK}-{4 * CHUNK - 1}",
                                    f"bytes={have}-{FILE_SIZE - 1}"]
    assert result.bytes_fetched == CHUNK + FILE_SIZE - have
    assert result.bytes_reused == 9 * CHUNK


def test_a_bad_prefix_of_the_partial_chunk_is_fetched_whole(
    served: Served, tmp_path: Path
) -> None:
    dest = tmp_path / "b.bin"
    have = 4 * CHUNK + 100
    damaged = bytearray(served.content[:have])
    damaged[4 * CHUNK + 10] ^= 0xFF  # the kept prefix of chunk 4 is wrong
    part_path(dest).write_bytes(damaged)
    result = download(served.url, dest, served.plan, config=fast_config())
    assert dest.read_bytes() == served.content
    assert result.chunks_refetched == 1
    assert ranges_asked(served) == [f"bytes={have}-{FILE_SIZE - 1}",
                                    f"bytes={4 * CHUNK}-{5 * CHUNK - 1}"]
    assert result.bytes_fetched == FILE_SIZE - have + CHUNK


def test_a_server_ignoring_range_is_handled(served: Served, tmp_path: Path) -> None:
    served.server.ignore_range = True
    dest = tmp_path / "b.bin"
    part_path(dest).write_bytes(served.content[: 3 * CHUNK])
    result = download(served.url, dest, served.plan, config=fast_config())
    assert dest.read_bytes() == served.content
    assert [r.status for r in served.server.requests] == [200]
    assert result.bytes_reused == 3 * CHUNK
    assert result.bytes_fetched == FILE_SIZE  # owned bytes crossed the link, were skipped


def test_a_lying_content_range_is_refused_not_retried(served: Served, tmp_path: Path) -> None:
    served.server.content_range_shift = 100
    with pytest.raises(TransferError, match="Content-Range"):
        download(served.url, tmp_path / "b.bin", served.plan, config=fast_config())
    assert len(served.server.requests) == 1


def test_a_stalled_body_times_out_and_resumes(served: Served, tmp_path: Path) -> None:
    served.server.stall_once(after_bytes=200_000, seconds=3)
    dest = tmp_path / "b.bin"
    result = download(served.url, dest, served.plan, config=fast_config(read_timeout=0.3))
    assert dest.read_bytes() == served.content
    assert result.retries == 1
    assert ranges_asked(served)[1] == f"bytes=200000-{FILE_SIZE - 1}"  # resumed mid-chunk
    assert result.bytes_fetched == FILE_SIZE


def test_a_region_of_the_remote_file(served: Served, tmp_path: Path) -> None:
    plan = make_plan(served.source, 10_000, region_offset=123_456, region_size=50_001)
    dest = tmp_path / "region.bin"
    download(served.url, dest, plan, config=fast_config())
    assert dest.read_bytes() == served.content[123_456:173_457]
    assert ranges_asked(served) == ["bytes=123456-173456"]


def test_a_plan_longer_than_the_remote_file_is_an_integrity_error(
    served: Served, tmp_path: Path
) -> None:
    plan = make_plan(served.source, CHUNK, region_offset=FILE_SIZE - 10, region_size=10)
    object.__setattr__(plan, "region_offset", FILE_SIZE)  # the remote is 10 bytes too short
    with pytest.raises(IntegrityError, match="plan needs"):
        download(served.url, tmp_path / "r.bin", plan, config=fast_config())


def test_verified_destination_is_not_fetched_again(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "b.bin"
    download(served.url, dest, served.plan, config=fast_config())
    again = download(served.url, dest, served.plan, config=fast_config())
    assert again.bytes_fetched == 0 and again.bytes_reused == FILE_SIZE
    assert len(served.server.requests) == 1


def test_two_downloaders_of_one_file_are_refused(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "b.bin"
    with PartFile(part_path(dest)), pytest.raises(StorageError, match="another process"):
        download(served.url, dest, served.plan, config=fast_config())


def test_stop_event_cancels_during_backoff(served: Served, tmp_path: Path) -> None:
    served.server.fail_every = 1
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(TransferError, match="cancelled"):
        download(served.url, tmp_path / "b.bin", served.plan,
                 config=fast_config(backoff_initial=10, backoff_max=10), stop=stop)
    assert time.monotonic() - started < 5


def test_max_rate_is_honoured(served: Served, tmp_path: Path) -> None:
    """200 kB/s on 1 MiB must take about 5.2 s; generous bounds, it is a behaviour check."""
    started = time.monotonic()
    download(served.url, tmp_path / "b.bin", served.plan, config=fast_config(max_rate=200_000))
    elapsed = time.monotonic() - started
    assert 4.5 <= elapsed < 15, elapsed


def test_fetch_range_reads_a_head(served: Served) -> None:
    config = fast_config()
    assert fetch_range(served.url, 0, 4096, config=config) == served.content[:4096]
    assert fetch_range(served.url, 1000, 10, config=config) == served.content[1000:1010]
    tail = fetch_range(served.url, FILE_SIZE - 5, 100, config=config)
    assert tail == served.content[-5:]  # the file ends first
    assert fetch_range(served.url, FILE_SIZE + 10, 100, config=config) == b""


def test_fetch_range_retries_and_handles_a_server_ignoring_range(served: Served) -> None:
    served.server.fail_next(2, 502)
    served.server.ignore_range = True
    data = fetch_range(served.url, 70_000, 500, config=fast_config())
    assert data == served.content[70_000:70_500]
    assert [r.status for r in served.server.requests] == [502, 502, 200]


def test_configured_headers_are_sent(served: Served, tmp_path: Path) -> None:
    served.server.require_token = "s3cret"
    with pytest.raises(AuthError):
        download(served.url, tmp_path / "a.bin", served.plan, config=fast_config())
    config = fast_config(headers={"Authorization": "Bearer s3cret"})
    download(served.url, tmp_path / "b.bin", served.plan, config=config)
    assert (tmp_path / "b.bin").read_bytes() == served.content


def test_without_plan_a_complete_part_needs_no_body(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "whole.bin"
    part_path(dest).write_bytes(served.content)
    result = download(served.url, dest, None, config=fast_config())
    assert dest.read_bytes() == served.content
    assert result.bytes_fetched == 0 and result.bytes_reused == FILE_SIZE
    assert [r.status for r in served.server.requests] == [416]


def test_without_plan_a_part_longer_than_the_remote_restarts(
    served: Served, tmp_path: Path
) -> None:
    dest = tmp_path / "whole.bin"
    part_path(dest).write_bytes(b"\0" * (FILE_SIZE + 10))
    result = download(served.url, dest, None, config=fast_config())
    assert dest.read_bytes() == served.content
    assert result.bytes_reused == 0 and result.bytes_fetched == FILE_SIZE


def test_a_server_ignoring_range_while_repairing_a_middle_chunk(
    served: Served, tmp_path: Path
) -> None:
    served.server.ignore_range = True
    dest = tmp_path / "b.bin"
    damaged = bytearray(served.content)
    damaged[2 * CHUNK] ^= 0xFF
    part_path(dest).write_bytes(damaged)
    result = download(served.url, dest, served.plan, config=fast_config())
    assert dest.read_bytes() == served.content
    # read from byte 0 to the end of chunk 2 (plus what one socket read brought), then stopped
    assert 3 * CHUNK <= result.bytes_fetched < 4 * CHUNK
    assert result.bytes_reused == FILE_SIZE - CHUNK


def test_fetch_range_404_is_not_found(served: Served) -> None:
    with pytest.raises(NotFoundError):
        fetch_range(served.server.url_for("missing"), 0, 10, config=fast_config())
