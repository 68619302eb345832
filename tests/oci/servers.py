"""In-process servers for fault and auth tests: a TCP proxy that cuts connections, an
HTTP server that always answers 500, and a Bearer token server that signs JWTs the
real Docker Distribution registry accepts (x5c chain to its rootcertbundle)."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

METHODS = (b"GET ", b"PUT ", b"POST ", b"PATCH ", b"HEAD ", b"DELETE ")


@dataclass
class ProxyRules:
    """When the proxy cuts a connection.

    cut_on_request: cut when the Nth client->server buffer starting with this method
        line is seen (1-based ``cut_on_nth``), before forwarding it.
    cut_upstream_after: cut a client->server stream after this many body bytes of a
        request line starting with ``cut_upstream_method`` (mid-body break).
    cut_downstream_after: cut the server->client stream after this many more bytes
        (counted from when it is set), once.
    """

    cut_on_request: bytes | None = None
    cut_on_nth: int = 1
    cut_upstream_method: bytes | None = None
    cut_upstream_after: int | None = None
    cut_downstream_after: int | None = None
    seen: dict[bytes, int] = field(default_factory=dict)
    cuts: int = 0
    requests: list[bytes] = field(default_factory=list)


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 to TARGET (host, port) that can cut connections."""

    def __init__(self, target: tuple[str, int], rules: ProxyRules | None = None) -> None:
        self.target = target
        self.rules = rules or ProxyRules()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self._server.close()

    def _accept(self) -> None:
        self._server.settimeout(0.05)
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(self.target)
            state = {"closed": False}
            threading.Thread(target=self._pump_up, args=(client, upstream, state),
                             daemon=True).start()
            threading.Thread(target=self._pump_down, args=(upstream, client, state),
                             daemon=True).start()

    def _cut(self, a: socket.socket, b: socket.socket, state: dict[str, bool]) -> None:
        with self._lock:
            self.rules.cuts += 1
        self._close(a, b, state)

    def _close(self, a: socket.socket, b: socket.socket, state: dict[str, bool]) -> None:
        state["closed"] = True
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _pump_up(self, src: socket.socket, dst: socket.socket, state: dict[str, bool]) -> None:
        rules = self.rules
        body_budget: int | None = None
        while not state["closed"]:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            line = data.split(b"\r\n", 1)[0]
            if line.startswith(METHODS):
                method = line.split(b" ", 1)[0]
                with self._lock:
                    rules.requests.append(line)
                    rules.seen[method] = rules.seen.get(method, 0) + 1
                    count = rules.seen[method]
                if rules.cut_on_request == method and count == rules.cut_on_nth:
                    self._cut(src, dst, state)
                    return
                if rules.cut_upstream_method == method and rules.cut_upstream_after is not None:
                    body_budget = rules.cut_upstream_after + len(data.split(b"\r\n\r\n", 1)[0]) + 4
                    rules.cut_upstream_after = None
            if body_budget is not None:
                if len(data) >= body_budget:
                    try:
                        dst.sendall(data[:body_budget])
                        time.sleep(0.2)
                    except OSError:
                        pass
                    self._cut(src, dst, state)
                    return
                body_budget -= len(data)
            try:
                dst.sendall(data)
            except OSError:
                break
        if not state["closed"]:
            self._close(src, dst, state)

    def _pump_down(self, src: socket.socket, dst: socket.socket, state: dict[str, bool]) -> None:
        while not state["closed"]:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            with self._lock:
                budget = self.rules.cut_downstream_after
                if budget is not None:
                    self.rules.cut_downstream_after = budget - len(data)
                    if budget <= len(data):
                        self.rules.cut_downstream_after = None
            if budget is not None and budget <= len(data):
                with contextlib.suppress(OSError):
                    dst.sendall(data[:budget])
                self._cut(src, dst, state)
                return
            try:
                dst.sendall(data)
            except OSError:
                break
        if not state["closed"]:
            self._close(src, dst, state)


class _Handler(BaseHTTPRequestHandler):
    responder: Callable[[BaseHTTPRequestHandler], None]

    def log_message(self, format: str, *args: object) -> None:
        return

    def _handle(self) -> None:
        type(self).responder(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class HttpServer:
    """A threaded in-process HTTP server calling RESPONDER(handler) per request."""

    def __init__(self, responder: Callable[[BaseHTTPRequestHandler], None]) -> None:
        handler = type("Handler", (_Handler,), {"responder": staticmethod(responder)})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self._server.server_address[1]
        self.requests = 0
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def answer_500(handler: BaseHTTPRequestHandler) -> None:
    body = b'{"errors":[{"code":"UNKNOWN","message":"internal failure"}]}'
    handler.send_response(500)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """Signs registry Bearer tokens with an EC key whose self-signed cert the registry
    trusts (rootcertbundle)."""

    def __init__(self, workdir: Path, service: str = "test-registry",
                 issuer: str = "test-issuer") -> None:
        self.service, self.issuer = service, issuer
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deltaport-test-token")])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = workdir / "token-cert.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def token(self, subject: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + 600,
                  "nbf": now - 60, "iat": now, "jti": secrets.token_hex(8), "access": access}
        der = self._cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        head, body = _b64url(json.dumps(header).encode()), _b64url(json.dumps(claims).encode())
        signing_input = f"{head}.{body}"
        der_sig = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der_sig)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64url(signature)}"


def token_responder(issuer: TokenIssuer, users: dict[str, str],
                    log: list[str]) -> Callable[[BaseHTTPRequestHandler], None]:
    """A token endpoint: Basic credentials in USERS get every scope they ask for."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlsplit(handler.path).query)
        auth = handler.headers.get("Authorization", "")
        user = None
        if auth.startswith("Basic "):
            name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            user = name if users.get(name) == password else None
        log.append(f"{user}:{','.join(query.get('scope', []))}")
        if user is None:
            handler.send_response(401)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        body = json.dumps({"token": issuer.token(user, query.get("scope", []))}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return respond
