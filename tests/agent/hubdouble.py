"""A minimal hub implementing the device side of docs/hub-api.md, for agent tests.

A test double of the real hub (a real HTTP server on loopback, stdlib only): devices
by token, bundles served from files with single-range ``Range`` support, status
messages stored once per ``message_id`` while every post is recorded, check-ins
recorded, a desired manifest with an ETag. ``drop_status_answers`` makes it store a
status batch and then close the connection without answering, as a hub whose answer
was lost on the link would. A message naming one of ``unknown_deployments`` is not
stored but listed in ``rejected`` with an error, as the real hub does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from deltaport.agent.runtime.reports import report_digest

_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")
_PIECE = 16 * 1024


@dataclass
class HostedBundle:
    path: Path
    digest: str
    size: int
    image_id: str
    target: str
    deployment: str
    priority: int = 0
    url: str | None = None  # the listed download URL; None: the hub's own bundle endpoint


def file_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class HubDouble:
    tokens: dict[str, str]  # token -> device
    bundles: dict[str, list[HostedBundle]] = field(default_factory=dict)  # device -> list
    desired: dict[str, bytes] = field(default_factory=dict)  # device -> manifest
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)  # message_id -> message
    status_posts: list[list[str]] = field(default_factory=list)  # ids of each post
    checkins: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    runtime: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # POST /runtime bodies
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, status
    drop_status_answers: int = 0
    retire_on_present: bool = True  # stop offering a bundle once its image is reported
    unknown_deployments: set[str] = field(default_factory=set)  # their messages are rejected
    tls: ssl.SSLContext | None = None  # serve https with this server context

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls is not None else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self) -> HubDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def add_bundle(self, device: str, path: Path, *, image_id: str, target: str,
                   deployment: str, priority: int = 0, url: str | None = None) -> HostedBundle:
        bundle = HostedBundle(path, file_digest(path), path.stat().st_size, image_id, target,
                              deployment, priority, url)
        with self._lock:
            self.bundles.setdefault(device, []).append(bundle)
        return bundle

    def statuses(self, image_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages.values()
                    if image_id is None or m.get("image_id") == image_id]

    # -- request handling (called from server threads) ---------------------------------
    def device_for(self, auth: str | None) -> str | None:
        if not auth or not auth.startswith("Bearer "):
            return None
        return self.tokens.get(auth.removeprefix("Bearer "))

    def offers(self, device: str) -> list[dict[str, Any]]:
        with self._lock:
            present = {m["image_id"] for m in self.messages.values()
                       if m.get("device") == device and m.get("status") == "present"}
            return [
                {"digest": b.digest, "url": b.url or f"/api/v1/device/bundles/{b.digest}",
                 "size": b.size, "deployment": b.deployment, "priority": b.priority,
                 "target": b.target, "image_id": b.image_id}
                for b in self.bundles.get(device, [])
                if not (self.retire_on_present and b.image_id in present)
            ]

    def find_bundle(self, digest: str) -> tuple[str, HostedBundle] | None:
        with self._lock:
            for device, hosted in self.bundles.items():
                for b in hosted:
                    if b.digest == digest:
                        return device, b
        return None

    def store_status(self, device: str, messages: list[dict[str, Any]]
                     ) -> tuple[list[str], list[dict[str, str]]]:
        """Store BATCH; returns the ``accepted`` ids and the ``rejected`` entries."""
        accepted, rejected = [], []
        with self._lock:
            self.status_posts.append([str(m.get("message_id")) for m in messages])
            for m in messages:
                if m.get("device") != device:
                    continue  # a device reports only for itself
                if m.get("deployment") in self.unknown_deployments:
                    rejected.append({"message_id": str(m["message_id"]),
                                     "error": f"unknown deployment {m['deployment']!r}"})
                    continue
                self.messages.setdefault(str(m["message_id"]), m)
                accepted.append(str(m["message_id"]))
        return accepted, rejected


def _handler(hub: HubDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10

        def log_message(self, format: str, *args: object) -> None:
            return

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
            hub.requests.append((self.command, self.path, status))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(doc).encode(), headers)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"null")

        def _device(self) -> str | None:
            device = hub.device_for(self.headers.get("Authorization"))
            if device is None:
                self._json(401, {"detail": "bad device token"})
            return device

        def do_POST(self) -> None:
            device = self._device()
            if device is None:
                return
            body = self._body()
            if self.path == "/api/v1/device/checkin":
                with hub._lock:
                    hub.checkins.append((device, body["inventory"]))
                self._json(200, {"ok": True})
            elif self.path == "/api/v1/device/status":
                accepted, rejected = hub.store_status(device, body["messages"])
                if hub.drop_status_answers > 0:
                    hub.drop_status_answers -= 1
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(2)
                    return
                self._json(200, {"accepted": accepted, "rejected": rejected})
            elif self.path == "/api/v1/device/runtime":
                with hub._lock:
                    hub.runtime.append((device, body))
                    reports = [b["report"] for d, b in hub.runtime if d == device and "report" in b]
                if "report" in body:
                    self._json(200, {"ok": True})
                else:  # a heartbeat: known if it names the last report received
                    known = bool(reports) and report_digest(reports[-1]) == body["report_digest"]
                    self._json(200, {"known": known})
            else:
                self._json(404, {"detail": "not found"})

        def do_GET(self) -> None:
            device = self._device()
            if device is None:
                return
            if self.path == "/api/v1/device/bundles":
                self._json(200, {"bundles": hub.offers(device)})
            elif self.path.startswith("/api/v1/device/bundles/"):
                self._bundle(device, self.path.rsplit("/", 1)[1])
            elif self.path == "/api/v1/device/desired-manifest":
                data = hub.desired.get(device)
                if data is None:
                    self._json(404, {"detail": "no desired manifest yet"})
                    return
                etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self._send(304, headers={"ETag": etag})
                else:
                    self._send(200, data, {"ETag": etag})
            else:
                self._json(404, {"detail": "not found"})

        def _bundle(self, device: str, digest: str) -> None:
            found = hub.find_bundle(digest)
            if found is None:
                self._json(404, {"detail": "no such bundle"})
                return
            owner, bundle = found
            if owner != device:
                self._json(403, {"detail": "another device's bundle"})
                return
            size = bundle.size
            start, end, status = 0, size, 200
            value = self.headers.get("Range")
            if value:
                match = _RANGE_RE.match(value.strip())
                if match is None or int(match.group(1)) >= size:
                    self._send(416, headers={"Content-Range": f"bytes */{size}"})
                    return
                start = int(match.group(1))
                end = min(size, int(match.group(2)) + 1) if match.group(2) else size
                status = 206
            hub.requests.append(("GET", self.path, status))
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            try:
                with bundle.path.open("rb") as f:
                    f.seek(start)
                    left = end - start
                    while left > 0:
                        piece = f.read(min(_PIECE, left))
                        self.wfile.write(piece)
                        left -= len(piece)
            except OSError:
                self.close_connection = True

    return Handler
