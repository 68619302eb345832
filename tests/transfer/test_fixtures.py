"""The test tools themselves: the proxy cuts and throttles exactly; the server speaks Range."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from tests.fixtures.proxy import TcpProxy
from tests.fixtures.rangeserver import RangeServer


def _serve_bytes(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    root = tmp_path / "srv"
    root.mkdir()
    data = bytes(i % 251 for i in range(size))
    (root / "f").write_bytes(data)
    return root, data


def _raw_get(port: int, path: str) -> bytes:
    """Everything the socket delivers for one GET until it is closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_proxy_cuts_after_exactly_n_bytes(tmp_path: Path) -> None:
    root, _ = _serve_bytes(tmp_path, 300_000)
    with RangeServer(root) as server, \
            TcpProxy(("127.0.0.1", server.port), cut_after=10_000) as link:
        received = _raw_get(link.port, "/f")
        assert len(received) == 10_000
        assert link.bytes_down == 10_000 and link.cuts == 1 and link.connections == 1
        assert link.bytes_up > 0


def test_proxy_throttles(tmp_path: Path) -> None:
    root, data = _serve_bytes(tmp_path, 200_000)
    with RangeServer(root) as server, TcpProxy(("127.0.0.1", server.port), rate=400_000) as link:
        started = time.monotonic()
        body = httpx.get(f"{link.url}/f").content
        elapsed = time.monotonic() - started
    assert body == data
    assert 0.45 <= elapsed < 3, elapsed


def test_proxy_outage_refuses_then_recovers(tmp_path: Path) -> None:
    root, data = _serve_bytes(tmp_path, 1000)
    with RangeServer(root) as server, TcpProxy(("127.0.0.1", server.port)) as link:
        link.set_outage(True)
        try:
            httpx.get(f"{link.url}/f")
            raise AssertionError("the link should be down")
        except httpx.TransportError:
            pass
        link.set_outage(False)
        assert httpx.get(f"{link.url}/f").content == data


def test_rangeserver_ranges(tmp_path: Path) -> None:
    root, data = _serve_bytes(tmp_path, 1000)
    with RangeServer(root) as server:
        url = server.url_for("f")
        r = httpx.get(url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == data[10:20]
        assert r.headers["content-range"] == "bytes 10-19/1000"
        r = httpx.get(url, headers={"Range": "bytes=990-"})
        assert r.status_code == 206 and r.content == data[990:]
        r = httpx.get(url, headers={"Range": "bytes=-5"})
        assert r.content == data[-5:]
        r = httpx.get(url, headers={"Range": "bytes=1000-"})
        assert r.status_code == 416 and r.headers["content-range"] == "bytes */1000"
        assert httpx.get(url).content == data
        assert httpx.get(server.url_for("../etc/passwd")).status_code == 404
        assert [x.status for x in server.requests] == [206, 206, 206, 416, 200, 404]


def test_rangeserver_faults(tmp_path: Path) -> None:
    root, data = _serve_bytes(tmp_path, 1000)
    with RangeServer(root) as server:
        url = server.url_for("f")
        server.fail_next(2, 500)
        assert [httpx.get(url).status_code for _ in range(3)] == [500, 500, 200]
        server.corrupt_once("f", 100, 2)
        bad = httpx.get(url).content
        assert bad[:100] == data[:100] and bad[100:102] != data[100:102]
        assert bad[102:] == data[102:]
        assert httpx.get(url).content == data  # once only
        server.ignore_range = True
        assert httpx.get(url, headers={"Range": "bytes=5-9"}).status_code == 200
