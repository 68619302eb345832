"""Fixtures for the notify tests: the fleet databases (sqlite and real PostgreSQL), a
real HTTP receiver that can fail its first requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.fleet.conftest import (  # noqa: F401 - fixtures
    db_url,
    engine,
    postgres,
    sqlite_engine,
    sqlite_url,
)


@dataclass
class Hit:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """A real HTTP server answering 500 to its first ``fail_first`` POSTs, then 204."""

    url: str
    fail_first: int = 0
    delay: float = 0.0
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: dict[str, int] = field(default_factory=dict)
    overlaps: int = 0

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        event_id = headers.get("x-deltaport-event-id", "")
        with self.lock:
            self.in_flight[event_id] = self.in_flight.get(event_id, 0) + 1
            if self.in_flight[event_id] > 1:
                self.overlaps += 1
            status = 500 if len(self.hits) < self.fail_first else 204
            self.hits.append(Hit(headers, body, status))
        time.sleep(self.delay)
        with self.lock:
            self.in_flight[event_id] -= 1
        return status

    def accepted(self) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.status == 204]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """The receiver on a free port of 127.0.0.1 (tests set fail_first / delay)."""
    state: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = state[0].answer({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.append(Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hook"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state[0]
    finally:
        server.shutdown()
        server.server_close()
