"""A small Registry HTTP API v2 client over httpx: one host, auth, retries, errors.

Every foreign error is mapped here: httpx transport errors become TransferError, error
statuses become RegistryError / AuthError / NotFoundError naming the host and what was
asked. Idempotent requests are retried a bounded number of times on transient
failures (connection errors, 5xx).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from urllib.parse import urljoin

import httpx

from deltaport.errors import AuthError, NotFoundError, RegistryError, TransferError
from deltaport.oci.options import TransportOptions
from deltaport.oci.registry.auth import Authenticator

MAX_ERROR_BODY = 64 * 1024
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


def error_detail(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of a registry error body, or ('', '')."""
    try:
        body = response.read()[:MAX_ERROR_BODY]
        doc = httpx.Response(200, content=body).json()
        first = doc["errors"][0]
        return str(first.get("code", "")), str(first.get("message", ""))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, httpx.HTTPError):
        return "", ""


class RegistryClient:
    """Talks to one registry HOST."""

    def __init__(self, host: str, options: TransportOptions,
                 http: httpx.Client | None = None) -> None:
        """HTTP is for tests (an httpx.Client over a MockTransport); normally made here."""
        self.host = host
        self.options = options
        timeout = httpx.Timeout(options.read_timeout, connect=options.connect_timeout)
        self._http = http or httpx.Client(timeout=timeout, verify=not options.insecure,
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
        last: Exception | None = None
        for position, base in enumerate(candidates, 1):
            tries = self.options.retries + 1 if position == len(candidates) else 1
            for attempt in range(tries):
                try:
                    self._http.get(f"{base}/v2/")
                    return base
                except httpx.TransportError as exc:
                    last = exc
                    if attempt + 1 < tries:
                        self._sleep(attempt)
        raise TransferError(f"cannot reach registry {self.host}: {last}") from last

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
                if attempt >= attempts:
                    raise TransferError(
                        f"cannot reach registry {self.host} ({what}): {exc}"
                    ) from exc
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
