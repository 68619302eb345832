"""A small Registry HTTP API v2 client over httpx: one host, auth, retries, errors.

Every foreign error is mapped here: httpx transport errors become TransferError (a
certificate that does not verify: UntrustedCertificateError), error statuses become
RegistryError / AuthError / NotFoundError naming the host and what was asked.
Idempotent requests are retried a bounded number of times on transient failures
(connection errors, 5xx).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urljoin

import httpx

from deltaport.errors import (
    AuthError,
    NotFoundError,
    PlainHttpError,
    RegistryError,
    TransferError,
    UntrustedCertificateError,
    UsageError,
)
from deltaport.oci.options import TransportOptions
from deltaport.oci.registry.auth import Authenticator

MAX_ERROR_BODY = 64 * 1024
MAX_ERROR_DETAIL = 500  # characters of an error's detail kept in the message
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
_NOT_FOUND_CODES = frozenset({"MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN"})


def is_local_host(host: str) -> bool:
    """Whether HOST[:PORT] is this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def candidate_base_urls(host: str, insecure: bool) -> list[str]:
    """Base URLs to try, in order: https (verified) normally; plain http for local
    hosts; https-unverified then http when INSECURE."""
    if is_local_host(host):
        return [f"http://{host}"]
    if insecure:
        return [f"https://{host}", f"http://{host}"]
    return [f"https://{host}"]


def tls_verify(insecure: bool, ca_file: Path | None) -> ssl.SSLContext | bool:
    """What httpx should verify https with: nothing if INSECURE, else the CAs httpx
    trusts by default (certifi, SSL_CERT_FILE/SSL_CERT_DIR), the system store, and the
    PEM bundle CA_FILE (self-signed device and cloud registries).

    Raises:
        UsageError: CA_FILE cannot be read or holds no usable certificate.
    """
    if insecure:
        return False
    context = httpx.create_ssl_context()
    context.load_default_certs()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load CA certificates from {ca_file}: {exc}") from exc
    return context


def untrusted_certificate(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind EXC (httpx wraps it twice), if any."""
    seen: BaseException | None = exc
    for _ in range(8):  # bounded walk down the cause/context chain
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


PLAIN_HTTP_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE",
                                "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"})  # OpenSSL's words


def answered_in_plain_http(exc: BaseException) -> bool:
    """Whether the TLS handshake behind EXC failed because the server spoke plain HTTP."""
    seen: BaseException | None = exc
    for _ in range(8):  # bounded walk down the cause/context chain
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError) and getattr(seen, "reason", None) in PLAIN_HTTP_REASONS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def transport_error(host: str, what: str, exc: httpx.TransportError) -> TransferError:
    """The deltaport error for a transport failure EXC talking to HOST about WHAT."""
    if answered_in_plain_http(exc):
        return PlainHttpError(
            f"registry {host} speaks plain HTTP, not https: use --insecure (only for a "
            "registry on a network you trust)")
    cert = untrusted_certificate(exc)
    if cert is not None:
        reason = cert.verify_message or str(cert)
        return UntrustedCertificateError(
            f"registry {host}: TLS certificate is not trusted ({reason}); pass --ca-file "
            "with the CA that signed it, or --insecure to skip verification")
    return TransferError(f"cannot reach registry {host} ({what}): {exc}")


def error_detail(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of a registry error body, or ('', ''); a text ``detail`` is kept
    (Docker Distribution's "unknown error" says "no space left on device" only there)."""
    try:
        body = response.read()[:MAX_ERROR_BODY]
        doc = httpx.Response(200, content=body).json()
        first = doc["errors"][0]
        message = str(first.get("message", ""))
        detail = _detail_text(first.get("detail"))
        if detail:
            message = f"{message}: {detail}" if message else detail
        return str(first.get("code", "")), message
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, httpx.HTTPError):
        return "", ""


def _detail_text(detail: object) -> str:
    """An error's ``detail`` as text: a string, or Distribution's storage-driver error
    (``{"Enclosed": {"Op": "write", "Path": ..., "Err": 28}}``) with its errno named."""
    if isinstance(detail, str):
        return detail[:MAX_ERROR_DETAIL]
    enclosed = detail.get("Enclosed") if isinstance(detail, dict) else None
    if isinstance(enclosed, dict) and isinstance(enclosed.get("Err"), int):
        return (f"{enclosed.get('Op', '')} {enclosed.get('Path', '')}: "
                f"{os.strerror(enclosed['Err']).lower()}")[:MAX_ERROR_DETAIL]
    return ""


class RegistryClient:
    """Talks to one registry HOST."""

    def __init__(self, host: str, options: TransportOptions,
                 http: httpx.Client | None = None) -> None:
        """HTTP is for tests (an httpx.Client over a MockTransport); normally made here."""
        self.host = host
        self.options = options
        timeout = httpx.Timeout(options.read_timeout, connect=options.connect_timeout)
        self._http = http or httpx.Client(
            timeout=timeout, verify=tls_verify(options.insecure, options.ca_file),
            follow_redirects=False)
        self.auth = Authenticator(host, options.username, options.password)
        self._base: str | None = None

    def close(self) -> None:
        self._http.close()

    @property
    def base_url(self) -> str:
        """The working base URL, found by pinging /v2/ on each candidate."""
        if self._base is None:
            self._base = self._discover_base()
        return self._base

    def _discover_base(self) -> str:
        """The first candidate that answers GET /v2/ at all (any status); the last
        candidate is retried, earlier ones (https before an insecure http) are not."""
        candidates = candidate_base_urls(self.host, self.options.insecure)
        last: httpx.TransportError | None = None
        for position, base in enumerate(candidates, 1):
            tries = self.options.retries + 1 if position == len(candidates) else 1
            for attempt in range(tries):
                try:
                    self._http.get(f"{base}/v2/")
                    return base
                except httpx.TransportError as exc:
                    last = exc
                    if untrusted_certificate(exc) is not None and position == len(candidates):
                        break  # retrying cannot make the certificate trusted
                    if attempt + 1 < tries:
                        self._sleep(attempt)
        if last is None:
            raise TransferError(f"cannot reach registry {self.host}: no base URL to try")
        raise transport_error(self.host, "ping /v2/", last) from last

    def url(self, path_or_url: str) -> str:
        return urljoin(self.base_url + "/", path_or_url)

    def _sleep(self, attempt: int) -> None:
        if attempt < self.options.retries:
            time.sleep(self.options.retry_backoff * (2**attempt))

    def request(self, method: str, path_or_url: str, *, scope: tuple[str, ...],
                what: str, headers: Mapping[str, str] | None = None,
                content: bytes | None = None, stream: bool = False,
                ok: tuple[int, ...] = (200,), follow_redirects: bool = False,
                retry: bool = True) -> httpx.Response:
        """Send a request, answering auth challenges and retrying transient failures.

        Returns a response whose status is in OK (if STREAM, the caller closes it).

        Raises:
            TransferError: the registry could not be reached.
            AuthError / NotFoundError / RegistryError: it answered with an error.
        """
        url = self.url(path_or_url)
        attempts = self.options.retries + 1 if retry and method in IDEMPOTENT else 1
        auth_rounds = 0
        attempt = 0
        while True:
            all_headers = {**(headers or {}), **self.auth.headers(scope)}
            request = self._http.build_request(method, url, headers=all_headers, content=content)
            try:
                response = self._http.send(request, stream=stream,
                                           follow_redirects=follow_redirects)
            except httpx.TransportError as exc:
                attempt += 1
                if attempt >= attempts or untrusted_certificate(exc) is not None:
                    raise transport_error(self.host, what, exc) from exc
                self._sleep(attempt - 1)
                continue
            if response.status_code in ok:
                return response
            if response.status_code == 401 and auth_rounds < 2:
                auth_rounds += 1
                response.close()
                self.auth.answer(response, scope, self._http)
                continue
            if response.status_code >= 500 and attempt + 1 < attempts:
                attempt += 1
                response.close()
                self._sleep(attempt - 1)
                continue
            self.raise_for(response, what)

    def raise_for(self, response: httpx.Response, what: str) -> None:
        """Raise the deltaport error for an unexpected RESPONSE (always raises)."""
        status = response.status_code
        code, message = error_detail(response)
        response.close()
        detail = f"{code}: {message}" if code else f"HTTP {status}"
        text = f"registry {self.host} ({what}) answered {status} {detail}"
        if status in (401, 403):
            raise AuthError(text, status)
        if status == 404 or code in _NOT_FOUND_CODES:
            raise NotFoundError(text, status)
        raise RegistryError(text, status)
