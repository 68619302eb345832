"""Resumable, verified, rate-limited HTTP downloads: the only I/O of this package.

``download`` grows ``dest.part``; on every start it re-verifies what is already on
disk against the chunk plan and fetches only bad or missing bytes with ``Range``.
Each chunk is hashed as it arrives; a chunk failing its digest is fetched again
afterwards (only that chunk: the stream goes on), a chunk failing ``max_chunk_attempts`` times is an
IntegrityError. Transient failures (refused, reset, timeout, 408/429/5xx) are
retried with exponential backoff and full jitter; other statuses fail at once
with a clear message. On success the file is fsynced and renamed into place.

The decisions live in pure modules (``plan``, ``protocol``, ``backoff``,
``ratelimit``); this module only moves bytes between them, the socket and the disk.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import httpx

from deltaport.errors import (
    FormatError,
    IntegrityError,
    StorageError,
    TransferError,
    UsageError,
)
from deltaport.transfer.backoff import backoff_delay, give_up_reason
from deltaport.transfer.config import DownloadConfig, DownloadResult
from deltaport.transfer.partfile import PartFile, part_path
from deltaport.transfer.plan import ChunkPlan, ranges_to_fetch
from deltaport.transfer.protocol import (
    StatusKind,
    classify_status,
    parse_content_range,
    range_header,
    retry_after_seconds,
    status_error,
)
from deltaport.transfer.ratelimit import TokenBucket

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""``progress(done, total)``: bytes of the file in hand and its size (-1 if unknown)."""

_HASH_BLOCK = 1024 * 1024  # bytes per read when hashing a whole file


class _Transient(Exception):
    """An attempt failed in a way that waiting may fix."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Again(Exception):
    """Drop this response and ask again at once (the download restarted from zero)."""


class _Sink(Protocol):
    """Where the bytes of a region go, and what the remote file's size implies."""

    pos: int  # region offset of the next byte to write
    total: int | None  # region size, None while unknown

    def write(self, data: bytes) -> None: ...

    def on_remote_total(self, remote_total: int) -> None: ...

    def done(self) -> int: ...


class _ChunkSink:
    """Writes into a part file, verifying each chunk of the plan as it completes."""

    def __init__(self, part: PartFile, plan: ChunkPlan, config: DownloadConfig) -> None:
        self.part = part
        self.plan = plan
        self.total: int | None = plan.total_size
        self.max_attempts = config.max_chunk_attempts
        self.pos = 0
        self.verified = 0  # bytes of chunks known good
        self.refetched = 0  # chunks fetched again after failing their digest
        self.redo: list[int] = []  # chunks that failed their digest, to fetch again
        self._failures: dict[int, int] = {}
        self._hasher = hashlib.sha256()

    def seek(self, pos: int) -> None:
        """Continue at ``pos``; the chunk's prefix already on disk is hashed from disk."""
        start = self.plan.start(self.plan.index_at(pos))
        prefix = self.part.pread(start, pos - start)
        self._hasher = hashlib.sha256(prefix)
        self.pos = start + len(prefix)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            index = self.plan.index_at(self.pos)
            take = min(len(view), self.plan.end(index) - self.pos)
            self.part.pwrite(self.pos, view[:take])
            self._hasher.update(view[:take])
            self.pos += take
            view = view[take:]
            if self.pos == self.plan.end(index):
                self._finish_chunk(index)

    def _finish_chunk(self, index: int) -> None:
        digest = "sha256:" + self._hasher.hexdigest()
        self._hasher = hashlib.sha256()
        if digest == self.plan.chunk_digests[index]:
            self.verified += self.plan.end(index) - self.plan.start(index)
            return
        failures = self._failures.get(index, 0) + 1
        self._failures[index] = failures
        if failures >= self.max_attempts:
            raise IntegrityError(
                f"chunk {index} (bytes {self.plan.start(index)}-{self.plan.end(index) - 1}) "
                f"failed its digest {failures} times: expected {self.plan.chunk_digests[index]}, "
                f"got {digest}"
            )
        log.warning("chunk %d failed its digest (%d/%d), will fetch it again",
                    index, failures, self.max_attempts)
        self.redo.append(index)  # the stream goes on: the next chunks may well be fine

    def on_remote_total(self, remote_total: int) -> None:
        needed = self.plan.region_offset + self.plan.total_size
        if remote_total < needed:
            raise IntegrityError(
                f"the remote file has {remote_total} bytes but the plan needs {needed}"
            )

    def done(self) -> int:
        if self.pos >= self.plan.total_size:
            return self.verified
        return self.verified + self.pos - self.plan.start(self.plan.index_at(self.pos))


class _WholeSink:
    """Writes into a part file with no chunk plan: size (and maybe sha256) checked at the end."""

    def __init__(self, part: PartFile, expected_size: int | None, limit: int) -> None:
        self.part = part
        self.expected_size = expected_size
        self.limit = limit
        self.total: int | None = expected_size
        self.pos = part.size()
        self.reused = self.pos  # bytes kept from an earlier run (0 once restarted)
        if expected_size is not None and self.pos > expected_size:
            self.restart("the partial file is longer than the expected size")

    def restart(self, why: str) -> None:
        log.warning("%s: restarting %s from zero", why, self.part.path)
        self.part.truncate(0)
        self.pos = 0
        self.reused = 0

    def write(self, data: bytes) -> None:
        if self.pos + len(data) > self.limit:
            raise TransferError(f"download exceeds max_file_size ({self.limit} bytes)")
        self.part.pwrite(self.pos, data)
        self.pos += len(data)

    def on_remote_total(self, remote_total: int) -> None:
        if self.expected_size is not None and remote_total != self.expected_size:
            raise IntegrityError(
                f"the remote file has {remote_total} bytes, expected {self.expected_size}"
            )
        if remote_total > self.limit:
            raise TransferError(
                f"the remote file has {remote_total} bytes, over max_file_size ({self.limit})"
            )
        if self.total is not None and remote_total != self.total:
            self.restart(f"the remote file changed size ({self.total} -> {remote_total})")
        elif self.pos > remote_total:
            self.restart("the partial file is longer than the remote file")
        self.total = remote_total

    def done(self) -> int:
        return self.pos


class _HeadSink:
    """Collects ``length`` bytes from ``start`` in memory (fewer if the file ends first)."""

    def __init__(self, start: int, length: int) -> None:
        self.start = start
        self.buffer = bytearray()
        self.pos = 0
        self.total: int | None = length

    def write(self, data: bytes) -> None:
        self.buffer += data
        self.pos += len(data)

    def on_remote_total(self, remote_total: int) -> None:
        self.total = min(self.total or 0, max(0, remote_total - self.start))

    def done(self) -> int:
        return self.pos


class _Session:
    """One call's worth of HTTP: the client, counters, rate limit, retry loop."""

    def __init__(
        self,
        http: httpx.Client,
        url: str,
        offset: int,
        config: DownloadConfig,
        progress: Progress | None,
        stop: threading.Event | None,
    ) -> None:
        self.http = http
        self.url = url
        self.offset = offset  # region start in the remote file
        self.config = config
        self.progress = progress
        self.stop = stop
        self.started = time.monotonic()
        self.fetched = 0
        self.requests = 0
        self.retries = 0
        self.timeout = httpx.Timeout(
            connect=config.connect_timeout,
            read=config.read_timeout,
            write=config.read_timeout,
            pool=config.connect_timeout,
        )
        self.bucket = (
            TokenBucket(config.max_rate, config.burst) if config.max_rate is not None else None
        )

    def fetch(self, sink: _Sink, end: int | None) -> None:
        """Fill ``sink`` up to region offset ``end`` (None: its total), retrying as needed."""
        failures = 0
        while True:
            target = end if end is not None else sink.total
            if target is not None and sink.pos >= target:
                return
            self._check_stop()
            before, total_before = sink.pos, sink.total
            try:
                self._request(sink, end)
                target = end if end is not None else sink.total
                if sink.pos == before and sink.total == total_before and (
                    target is None or sink.pos < target
                ):
                    raise _Transient("the answer brought no data")
                failures = 0
            except _Again:
                continue
            except _Transient as exc:
                failures = 0 if sink.pos != before else failures + 1
                self._wait_to_retry(exc, failures)

    def _wait_to_retry(self, exc: _Transient, failures: int) -> None:
        self.retries += 1
        elapsed = time.monotonic() - self.started
        reason = give_up_reason(failures, elapsed, self.config)
        if reason is not None:
            raise TransferError(f"GET {self.url}: {exc} ({reason})") from exc
        delay = backoff_delay(max(failures - 1, 0), self.config, random.random())
        if exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        if self.config.max_duration is not None:
            delay = min(delay, max(0.0, self.config.max_duration - elapsed))
        log.info("GET %s: %s; retrying in %.2fs", self.url, exc, delay)
        self._sleep(delay)

    def _sleep(self, seconds: float) -> None:
        if self.stop is None:
            time.sleep(seconds)
        elif self.stop.wait(seconds):
            self._check_stop()

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise TransferError(f"GET {self.url}: cancelled")

    def _request(self, sink: _Sink, end: int | None) -> None:
        """One GET from ``sink.pos`` to ``end`` (None: the sink's total, maybe unknown yet).

        Transport failures become _Transient.
        """
        target = end if end is not None else sink.total
        start = self.offset + sink.pos
        stop = None if target is None else self.offset + target
        headers = {
            **self.config.headers,
            "Range": range_header(start, stop),
            "Accept-Encoding": "identity",
        }
        self.requests += 1
        try:
            with self.http.stream("GET", self.url, headers=headers, timeout=self.timeout) as resp:
                skip = self._accept(resp, sink, start, stop)
                if skip is not None:
                    self._pump(resp, sink, skip, end)
        except (
            httpx.TimeoutException,
            httpx.NetworkError,
            httpx.RemoteProtocolError,
            httpx.ProxyError,
        ) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise UsageError(f"cannot download {self.url}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise TransferError(f"GET {self.url}: {type(exc).__name__}: {exc}") from exc

    def _accept(
        self, resp: httpx.Response, sink: _Sink, start: int, stop: int | None
    ) -> int | None:
        """Judge the status and headers; return how many body bytes to skip, or None for none."""
        kind = classify_status(resp.status_code)
        if kind is StatusKind.TRANSIENT:
            retry_after = retry_after_seconds(resp.headers.get("retry-after"),
                                              self.config.backoff_max)
            raise _Transient(f"{resp.status_code} {resp.reason_phrase}", retry_after)
        if kind is StatusKind.FATAL:
            raise status_error(resp.status_code, resp.reason_phrase, self.url)
        encoding = resp.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise TransferError(f"GET {self.url}: server applied Content-Encoding {encoding!r}")
        if kind is StatusKind.UNSATISFIABLE:
            self._unsatisfiable(resp, sink, start)
            return None
        if kind is StatusKind.PARTIAL:
            return self._partial(resp, sink, start, stop)
        length = resp.headers.get("content-length")
        if length is not None and length.isdigit():
            sink.on_remote_total(int(length))
            self._check_restarted(sink, start)
        if start:
            log.warning("GET %s: server ignored Range; skipping %d bytes", self.url, start)
        return start

    def _partial(self, resp: httpx.Response, sink: _Sink, start: int, stop: int | None) -> int:
        value = resp.headers.get("content-range")
        if value is None:
            raise TransferError(f"GET {self.url}: 206 without Content-Range")
        try:
            content_range = parse_content_range(value)
        except FormatError as exc:
            raise TransferError(f"GET {self.url}: {exc}") from exc
        if content_range.start != start or (
            stop is not None and content_range.end is not None and content_range.end >= stop
        ):
            raise TransferError(
                f"GET {self.url}: asked for {range_header(start, stop)}, "
                f"server sent Content-Range {value!r}"
            )
        if content_range.total is not None:
            sink.on_remote_total(content_range.total)
            self._check_restarted(sink, start)
        return 0

    def _unsatisfiable(self, resp: httpx.Response, sink: _Sink, start: int) -> None:
        value = resp.headers.get("content-range")
        try:
            total = parse_content_range(value).total if value else None
        except FormatError as exc:
            raise TransferError(f"GET {self.url}: 416 with {exc}") from exc
        if total is None:
            raise TransferError(f"GET {self.url}: 416 Range Not Satisfiable, size unknown")
        sink.on_remote_total(total)
        if self.offset + sink.pos == start and (sink.total is None or sink.pos < sink.total):
            raise TransferError(
                f"GET {self.url}: 416 for bytes from {start} of a {total}-byte file"
            )

    def _check_restarted(self, sink: _Sink, start: int) -> None:
        if self.offset + sink.pos != start:
            raise _Again("the download restarted")

    def _pump(self, resp: httpx.Response, sink: _Sink, skip: int, end: int | None) -> None:
        """Copy the body into ``sink``, dropping ``skip`` leading bytes, up to ``end``.

        ``end`` None means up to the sink's total, which the response may reveal.
        """
        for piece in _pieces(resp, self.config.read_size):
            self.fetched += len(piece)
            if self.bucket is not None:
                self.bucket.consume(len(piece))
            if skip >= len(piece):
                skip -= len(piece)
                continue
            data = piece[skip:]
            skip = 0
            limit = end if end is not None else sink.total
            if limit is not None:
                data = data[: limit - sink.pos]
            if data:
                sink.write(data)
                if self.progress is not None:
                    self.progress(sink.done(), -1 if sink.total is None else sink.total)
            if limit is not None and sink.pos >= limit:
                return
            self._check_stop()
        if sink.total is None:
            sink.on_remote_total(self.offset + sink.pos)  # a clean end of file: that is all


def _pieces(resp: httpx.Response, size: int) -> Iterator[bytes]:
    """The body as it arrives, in pieces of at most ``size`` bytes.

    Not ``iter_raw(size)``: that holds back a short tail until more arrives, and a
    connection dying meanwhile would lose bytes that did cross the link.
    """
    for data in resp.iter_raw():
        for start in range(0, len(data), size):
            yield data[start : start + size]


@contextmanager
def _client(client: httpx.Client | None) -> Iterator[httpx.Client]:
    """The caller's client, or one of our own closed afterwards."""
    if client is not None:
        yield client
        return
    with httpx.Client(follow_redirects=True) as own:
        yield own


def download(
    url: str,
    dest: Path,
    plan: ChunkPlan | None,
    *,
    config: DownloadConfig,
    progress: Progress | None = None,
    client: httpx.Client | None = None,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    stop: threading.Event | None = None,
) -> DownloadResult:
    """Download ``url`` (or the plan's region of it) to ``dest``, resuming and verifying.

    With a plan, every chunk is checked against its digest; without one, the size
    (``expected_size`` or what the server reports) and, if given, the whole-file
    ``expected_sha256`` ("sha256:...") are checked at the end. If ``dest`` already
    holds verified content nothing is fetched. Setting ``stop`` cancels between reads.

    Raises:
        IntegrityError: a chunk kept failing its digest, or the whole file its hash/size.
        AuthError, NotFoundError, RegistryError: the server refused (401/403, 404/410, ...).
        TransferError: the retry limits ran out, the server broke the Range protocol,
            or ``stop`` was set.
        StorageError: the local disk failed, or another process downloads the same file.
    """
    started = time.monotonic()
    if plan is not None and expected_size is not None and expected_size != plan.total_size:
        raise UsageError(f"expected_size {expected_size} contradicts the plan's "
                         f"{plan.total_size}")
    if _already_there(dest, plan, expected_sha256):
        size = dest.stat().st_size
        return DownloadResult(dest, size, 0, size, 0, 0, 0, time.monotonic() - started)
    offset = plan.region_offset if plan is not None else 0
    with PartFile(part_path(dest)) as part, _client(client) as http:
        session = _Session(http, url, offset, config, progress, stop)
        sink: _ChunkSink | _WholeSink
        if plan is not None:
            sink = _ChunkSink(part, plan, config)
            reused = _fill_planned(session, sink)
        else:
            sink = _WholeSink(part, expected_size, config.max_file_size)
            session.fetch(sink, None)
            reused = sink.reused
        if expected_sha256 is not None:
            _check_sha256(part, expected_sha256)
        part.commit(dest)
    return DownloadResult(
        path=dest,
        total_size=sink.pos if sink.total is None else sink.total,
        bytes_fetched=session.fetched,
        bytes_reused=reused,
        chunks_refetched=sink.refetched if isinstance(sink, _ChunkSink) else 0,
        requests=session.requests,
        retries=session.retries,
        elapsed=time.monotonic() - started,
    )


def _fill_planned(session: _Session, sink: _ChunkSink) -> int:
    """Re-verify the part file, fetch each bad or missing range; return bytes reused."""
    part, plan = sink.part, sink.plan
    if part.size() > plan.total_size:
        part.truncate(plan.total_size)
    good = part.verify_chunks(plan)
    sink.verified = sum(plan.end(i) - plan.start(i) for i, ok in enumerate(good) if ok)
    ranges = ranges_to_fetch(plan, good, part.size())
    log.info("%s: %d of %d bytes verified on disk, %d ranges to fetch",
             part.path, sink.verified, plan.total_size, len(ranges))
    if session.progress is not None:  # in hand: all but what is fetched again (a resume)
        session.progress(plan.total_size - sum(len(r) for r in ranges),
                         plan.total_size)
    reused = sink.verified
    for byte_range in ranges:
        sink.seek(byte_range.start)
        session.fetch(sink, byte_range.end)
    while sink.redo:  # bounded: each chunk fails at most max_chunk_attempts times
        index = sink.redo.pop(0)
        sink.refetched += 1
        sink.seek(plan.start(index))
        session.fetch(sink, plan.end(index))
    return reused


def _already_there(dest: Path, plan: ChunkPlan | None, expected_sha256: str | None) -> bool:
    """Whether ``dest`` exists (no part file) and verifies, so there is nothing to do."""
    if not dest.is_file() or part_path(dest).exists():
        return False
    if plan is None and expected_sha256 is None:
        return False
    with PartFile(dest) as existing:
        if plan is not None and (existing.size() != plan.total_size
                                 or not all(existing.verify_chunks(plan))):
            return False
        return expected_sha256 is None or _sha256_of(existing) == expected_sha256


def _sha256_of(part: PartFile) -> str:
    hasher = hashlib.sha256()
    offset = 0
    while block := part.pread(offset, _HASH_BLOCK):
        hasher.update(block)
        offset += len(block)
    return "sha256:" + hasher.hexdigest()


def _check_sha256(part: PartFile, expected: str) -> None:
    """Hash the finished part file; a mismatch deletes it (we cannot tell which bytes lie)."""
    actual = _sha256_of(part)
    if actual != expected:
        try:
            part.path.unlink()
        except OSError as exc:
            raise StorageError(f"cannot remove corrupt {part.path}: {exc}") from exc
        raise IntegrityError(f"{part.path}: sha256 is {actual}, expected {expected}")


def fetch_range(
    url: str,
    start: int,
    length: int,
    *,
    config: DownloadConfig,
    client: httpx.Client | None = None,
    stop: threading.Event | None = None,
) -> bytes:
    """Bytes ``[start, start + length)`` of ``url`` (fewer only if the file ends first).

    For reading a bundle's head before deciding to download it. Same retries,
    limits and error mapping as ``download``.
    """
    if start < 0 or length < 0 or length > config.max_file_size:
        raise UsageError(f"bad range: start={start} length={length}")
    if length == 0:
        return b""
    sink = _HeadSink(start, length)
    with _client(client) as http:
        _Session(http, url, start, config, None, stop).fetch(sink, None)
    return bytes(sink.buffer)
