"""An in-process TCP proxy that plays a bad link: throttled, cut, or down.

The demo puts one in front of the hub for each device (a 1 Mbit/s link that drops
connections at random); the tests use it for deterministic faults. ``cut_after``
closes each connection after exactly that many bytes went downstream (server to
client); ``cut_between=(lo, hi)`` instead draws each connection's limit at random in
that range (seeded, so a run can be repeated); ``rate`` paces the downstream bytes
of all connections together (one shared link), and ``set_outage`` refuses new
connections and cuts the open ones until lifted. It counts the bytes that crossed it
in each direction, so callers can tell what a transfer cost on the wire.

    with TcpProxy(("127.0.0.1", server_port), rate=125_000, cut_after=64 * 1024) as link:
        httpx.get(link.url + "/file")
        assert link.bytes_down < ...

Threads, not asyncio: one accept thread plus two pump threads per connection.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from types import TracebackType

from deltaport.errors import UsageError

_PIECE = 16 * 1024  # bytes per recv/send; also the pacing granularity


class _Pacer:
    """Schedules sends so the downstream average never exceeds ``rate`` bytes/s."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def wait(self, nbytes: int) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + nbytes / self.rate
        if start > now:
            time.sleep(start - now)


class _Connection:
    """One client connection and its upstream, pumped by two threads."""

    def __init__(
        self,
        proxy: TcpProxy,
        client: socket.socket,
        upstream: socket.socket,
        cut_at: int | None = None,
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.cut_at = cut_at  # this connection's own limit (cut_between); else the proxy's
        self.sent_down = 0
        self._closed = threading.Event()
        self.threads = [
            threading.Thread(target=self._pump_down, daemon=True),
            threading.Thread(target=self._pump_up, daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _pump_down(self) -> None:
        try:
            while not self._closed.is_set():
                want = _PIECE
                limit = self.cut_at if self.cut_at is not None else self.proxy.cut_after
                if limit is not None:
                    want = min(want, limit - self.sent_down)
                    if want <= 0:
                        self.proxy._note_cut()
                        break
                data = self.upstream.recv(want)
                if not data:
                    break
                if self.proxy._pacer is not None:
                    self.proxy._pacer.wait(len(data))
                self.client.sendall(data)
                self.sent_down += len(data)
                self.proxy._count(down=len(data))
        except OSError:
            pass
        finally:
            self.close()

    def _pump_up(self) -> None:
        try:
            while not self._closed.is_set():
                data = self.client.recv(_PIECE)
                if not data:
                    break
                self.upstream.sendall(data)
                self.proxy._count(up=len(data))
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Close both sides; with ``reset`` mode the client sees RST instead of FIN."""
        if self._closed.is_set():
            return
        self._closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                if self.proxy.cut_mode == "reset":  # RST on close; SHUT_RD wakes a blocked recv
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RD)
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self.proxy._forget(self)


class TcpProxy:
    """Listen on 127.0.0.1:<free port>, forward to ``upstream``, misbehave on request.

    Attributes may be changed while it runs (``rate`` via ``set_rate``).
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        rate: float | None = None,
        cut_after: int | None = None,
        cut_between: tuple[int, int] | None = None,
        cut_mode: str = "close",
        seed: int | None = None,
        scheme: str = "http",
    ) -> None:
        if scheme not in ("http", "https"):
            raise UsageError("scheme is 'http' or 'https'")
        self.scheme = scheme  # only what ``url`` says: TLS passes through a TCP proxy
        if cut_mode not in ("close", "reset"):
            raise UsageError("cut_mode is 'close' or 'reset'")
        if cut_between is not None and not 0 < cut_between[0] <= cut_between[1]:
            raise UsageError("cut_between must be (lo, hi) with 0 < lo <= hi")
        self.upstream = upstream
        self.cut_after = cut_after
        self.cut_between = cut_between
        self._random = random.Random(seed)
        self.cut_mode = cut_mode
        self._pacer = _Pacer(rate) if rate else None
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._outage = False
        self._stopping = threading.Event()
        self.bytes_down = 0  # upstream -> client, the direction a download flows
        self.bytes_up = 0  # client -> upstream
        self.connections = 0  # connections accepted and forwarded
        self.cuts = 0  # connections closed by cut_after
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` of the proxy (``https://`` in front of a TLS server)."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut every connection, and wait for the threads."""
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()
        self.cut_all()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def set_rate(self, rate: float | None) -> None:
        """Change the downstream rate cap (None: unthrottled)."""
        self._pacer = _Pacer(rate) if rate else None

    def set_outage(self, down: bool) -> None:
        """Take the link down (cut open connections, refuse new ones) or bring it back."""
        self._outage = down
        if down:
            self.cut_all()

    def cut_all(self) -> None:
        """Close every open connection now."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()
            for thread in connection.threads:
                if thread is not threading.current_thread():
                    thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._serve(client)

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(None)
        if self._outage:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        cut_at = self._random.randint(*self.cut_between) if self.cut_between else None
        connection = _Connection(self, client, upstream, cut_at)
        with self._lock:
            self._connections.add(connection)
            self.connections += 1
        connection.start()

    def _count(self, *, down: int = 0, up: int = 0) -> None:
        with self._lock:
            self.bytes_down += down
            self.bytes_up += up

    def _note_cut(self) -> None:
        with self._lock:
            self.cuts += 1

    def _forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)
