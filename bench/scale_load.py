"""A small, light HTTP/1.1 load generator for the scale benchmark (bench/scale_bench.py).

Plain asyncio streams with keep-alive connections, so the generator costs little of
the CPU the hubs, nginx and PostgreSQL share on this machine. Two shapes:

- :func:`closed_loop`: CONCURRENCY connections each send the next request as soon as
  the previous one answered (throughput: how much the hubs sustain);
- :func:`open_loop`: requests start on a fixed schedule (RATE per second) whatever the
  answers do, and each latency is counted from the scheduled start, so a slow server
  is not hidden by the generator waiting for it (latency at a given load).

Both are bounded by a number of requests and a wall-clock limit. 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 30.0
GRACE_S = 30.0  # an open-loop run waits this long past its schedule for the last answers


@dataclass(frozen=True)
class Call:
    """One request: METHOD PATH with a bearer TOKEN and a JSON BODY."""

    method: str
    path: str
    token: str
    body: bytes = b""


@dataclass
class Outcome:
    """What a run saw: answers by status, latencies (seconds) of the 2xx ones, wall time."""

    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    unanswered: int = 0  # open loop: still waiting when the grace ran out

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)

    def percentile_ms(self, p: float) -> float | None:
        """The P-th percentile of the answered latencies and the unanswered ones (counted as
        endless: None when the percentile falls among them)."""
        ranked = sorted(self.latencies) + [float("inf")] * self.unanswered
        if not ranked:
            return None
        value = ranked[min(len(ranked) - 1, int(p / 100 * len(ranked)))]
        return None if value == float("inf") else round(1000 * value, 1)


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, host: str, call: Call) -> int:
        head = (f"{call.method} {call.path} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {call.token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(call.body)}\r\n\r\n")
        self.writer.write(head.encode() + call.body)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            while (size := int((await self.reader.readline()).strip(), 16)) > 0:
                await self.reader.readexactly(size + 2)
            await self.reader.readline()
        else:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def _connect(url: str) -> tuple[_Conn, str]:
    parts = urlsplit(url)
    if parts.hostname != "127.0.0.1":
        raise ValueError(f"the benchmark stays on 127.0.0.1, not {parts.hostname}")
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, parts.port), CONNECT_TIMEOUT_S)
    return _Conn(reader, writer), parts.netloc


async def _one(pool: asyncio.Queue[_Conn | None], url: str, call: Call, out: Outcome,
               started: float) -> None:
    conn = await pool.get()
    try:
        if conn is None:
            conn, _ = await _connect(url)
        status = await asyncio.wait_for(conn.send(urlsplit(url).netloc, call), ANSWER_TIMEOUT_S)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
        out.errors += 1
        if conn is not None:
            conn.close()
        pool.put_nowait(None)  # a fresh connection next time
        return
    out.statuses[status] = out.statuses.get(status, 0) + 1
    if 200 <= status < 300:
        out.latencies.append(time.perf_counter() - started)
    pool.put_nowait(conn)


def _pool(size: int) -> asyncio.Queue[_Conn | None]:
    pool: asyncio.Queue[_Conn | None] = asyncio.Queue()
    for _ in range(size):
        pool.put_nowait(None)  # connections are opened on first use
    return pool


async def _closed(url: str, calls: Sequence[Call], concurrency: int, limit_s: float) -> Outcome:
    out, pool = Outcome(), _pool(concurrency)
    t0 = time.perf_counter()
    deadline = t0 + limit_s
    it = iter(calls)

    async def lane() -> None:
        for call in it:
            if time.perf_counter() > deadline:
                return
            await _one(pool, url, call, out, time.perf_counter())

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    out.seconds = time.perf_counter() - t0
    await _drain(pool)
    return out


async def _open(url: str, calls: Sequence[Call], rate: float, limit_s: float,
                max_conns: int) -> Outcome:
    out, pool = Outcome(), _pool(max_conns)
    t0 = time.perf_counter()
    tasks = []
    for i, call in enumerate(calls):
        at = t0 + i / rate
        if at - t0 > limit_s:
            break
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        tasks.append(asyncio.create_task(_one(pool, url, call, out, at)))
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=max(1.0, t0 + limit_s + GRACE_S
                                                         - time.perf_counter()))
        for task in late:  # still unanswered after the grace: counted, not waited for
            task.cancel()
        out.unanswered = len(late)
        await asyncio.gather(*late, return_exceptions=True)
    out.seconds = time.perf_counter() - t0
    await _drain(pool)
    return out


async def _drain(pool: asyncio.Queue[_Conn | None]) -> None:
    while not pool.empty():
        conn = pool.get_nowait()
        if conn is not None:
            conn.close()


def closed_loop(url: str, calls: Sequence[Call], *, concurrency: int, limit_s: float) -> Outcome:
    """Send CALLS over CONCURRENCY keep-alive connections, back to back, for at most LIMIT_S."""
    return asyncio.run(_closed(url, calls, concurrency, limit_s))


def open_loop(url: str, calls: Sequence[Call], *, rate: float, limit_s: float,
              max_conns: int = 64) -> Outcome:
    """Start CALLS at RATE per second for at most LIMIT_S; latency from each scheduled start.

    Answers still missing GRACE_S after the schedule ends are cancelled and counted as
    ``unanswered`` (as endless latencies in the percentiles).
    """
    return asyncio.run(_open(url, calls, rate, limit_s, max_conns))
