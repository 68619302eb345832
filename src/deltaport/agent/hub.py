"""The device side of the hub API (docs/hub-api.md): a thin client and pure parsers.

Every call carries ``Authorization: Bearer <device token>``; the hub knows the device
from the token. Transport failures become ``TransferError`` and error statuses the
errors of ``hub_status_error``, by :func:`deltaport.httperrors.error_for_status` (401/403
``AccessError``, 404 ``UnknownObjectError``, 429/5xx ``TransferError``, other refusals
``HubError``, ``StateError``, ``FormatError``), so the agent logs "hub unreachable"
(``exc.transient``) apart from "the hub refused", and ``agent run --once`` exits with
the error's code; the agent tries again on its next pass either way.

Transport security (docs/hub-api.md): the hub is reached over https, verified against
``hub.ca_file`` alone when configured, else the system trust store; a certificate that
does not verify, or a server that does not speak TLS, fails before any request (so
before the token) is sent: ``UntrustedCertificateError``. Plain http:// needs
``hub.insecure = true`` and is warned about at every start. An offer may point only at
the hub's own origin or a configured ``hub.bundle_origins`` entry (never at a service
on the device, such as its registry); the token goes to the hub's origin only, and
redirects are not followed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from deltaport.agent.config import HubSettings
from deltaport.errors import (
    DeltaportError,
    FormatError,
    TransferError,
    UntrustedCertificateError,
)
from deltaport.httperrors import error_for_status, is_transient_status
from deltaport.tlsutil import client_context, describe_tls_failure, tls_failure

API = "/api/v1/device"
MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # a bundle list, an answer to a status post
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # a desired manifest
MAX_BUNDLES = 1000  # offers in one bundle list
MAX_SOURCES = 1000  # source image IDs announced in one bundle list entry
MAX_STATUS_BATCH = 100  # messages per POST /status
MAX_REJECTION_CHARS = 2000  # a rejection's error text is cut to this (kept in the outbox)
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
log = logging.getLogger("deltaport.agent")


@dataclass(frozen=True)
class BundleOffer:
    """One bundle the hub holds for this device (an entry of ``GET /bundles``)."""

    digest: str  # sha256 of the whole bundle file
    url: str  # absolute download URL (resolved against the hub URL)
    size: int  # bytes of the bundle file
    image_id: str  # the target image the bundle rebuilds
    target: str | None = None  # "demo/app:v2"
    deployment: str | None = None
    priority: int = 0  # lower downloads first
    position: int = 0  # place in the hub's list (tie-breaker)
    sources: tuple[str, ...] = ()  # image IDs the bundle patches from: the image GC keeps them

    def __post_init__(self) -> None:
        # a tuple even when read back from offer.json (fetch.load_offer), where it is a list
        object.__setattr__(self, "sources", tuple(self.sources))

    @property
    def key(self) -> str:
        """The ledger key of this bundle in the agent state."""
        return f"hub:{self.digest}"


@dataclass(frozen=True)
class DesiredManifest:
    """A desired manifest as the hub served it."""

    body: bytes
    etag: str | None


def hub_status_error(method: str, url: str, status: int, reason: str) -> DeltaportError:
    """The error for an unexpected hub status (one mapping: httperrors), with a message a
    person can act on."""
    where = f"{method} {url}: {status} {reason}".rstrip()
    if status in (401, 403):
        why = "the hub refused this device's token"
    elif status == 404:
        why = "the hub does not have this"
    elif is_transient_status(status):
        why = "the hub is failing or busy"
    else:
        why = "the hub refused the request"
    return error_for_status(status, f"{where} - {why}")


def _require(entry: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise FormatError(f"{where}.{key} must be a {kind.__name__}")
    return value


def _optional_text(entry: Mapping[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > 1000):
        raise FormatError(f"{where}.{key} must be a string")
    return value


def _sources(entry: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """The optional ``sources`` list of image IDs (absent or null: none)."""
    value = entry.get("sources")
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_SOURCES:
        raise FormatError(f"{where}.sources must be a list of at most {MAX_SOURCES} image IDs")
    for i, image_id in enumerate(value):
        if not isinstance(image_id, str) or not _DIGEST_RE.match(image_id):
            raise FormatError(f"{where}.sources[{i}] must be a sha256 image ID, "
                              f"not {str(image_id)[:80]!r}")
    return tuple(dict.fromkeys(value))


def parse_bundle_list(doc: Any, base_url: str) -> list[BundleOffer]:
    """Check a ``GET /bundles`` answer; relative URLs are resolved against ``base_url``.

    Raises:
        FormatError: not ``{"bundles": [...]}``, too many entries, or a malformed entry.
    """
    items = doc.get("bundles") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise FormatError("hub bundle list must be an object with a 'bundles' list")
    if len(items) > MAX_BUNDLES:
        raise FormatError(f"hub lists more than {MAX_BUNDLES} bundles")
    offers = []
    for i, entry in enumerate(items):
        where = f"bundles[{i}]"
        if not isinstance(entry, dict):
            raise FormatError(f"{where} must be an object")
        digest = _require(entry, "digest", str, where)
        image_id = _require(entry, "image_id", str, where)
        if not _DIGEST_RE.match(digest) or not _DIGEST_RE.match(image_id):
            raise FormatError(f"{where}: digest and image_id must be sha256 digests")
        size = _require(entry, "size", int, where)
        priority = entry.get("priority", 0)
        if size <= 0 or not isinstance(priority, int) or isinstance(priority, bool):
            raise FormatError(f"{where}: size must be > 0 and priority an integer")
        url = entry.get("url") or f"{API}/bundles/{digest}"
        if not isinstance(url, str) or len(url) > 4000:
            raise FormatError(f"{where}.url must be a string")
        offers.append(BundleOffer(
            digest=digest, url=urljoin(base_url + "/", url), size=size, image_id=image_id,
            target=_optional_text(entry, "target", where),
            deployment=_optional_text(entry, "deployment", where),
            priority=priority, position=i, sources=_sources(entry, where),
        ))
    return offers


def download_order(offers: Sequence[BundleOffer]) -> list[BundleOffer]:
    """Lowest ``priority`` first, then the hub's list order (pure)."""
    return sorted(offers, key=lambda o: (o.priority, o.position))


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, default port filled in; None if it has none.

    A URL with user info (``https://hub@evil/``) has no origin we accept.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    return parts.scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[parts.scheme]


def same_origin(url: str, base_url: str) -> bool:
    """Whether ``url`` is on the hub itself (so the device token may be sent to it)."""
    mine = origin(url)
    return mine is not None and mine == origin(base_url)


def offer_refusal(url: str, base_url: str, bundle_origins: Sequence[str]) -> str | None:
    """Why an offer's download URL must not be fetched, or None when it may (pure).

    Only the hub's own origin and the configured bundle origins are allowed: a hub (or
    whoever answers in its name) must not make the device fetch from its own services.
    """
    mine = origin(url)
    if mine is not None and (mine == origin(base_url)
                             or any(mine == origin(o) for o in bundle_origins)):
        return None
    allowed = ", ".join([base_url, *bundle_origins])
    return (f"offered download URL {url[:200]} is not on the hub's origin nor on a "
            f"configured bundle origin (allowed: {allowed}); refused")


@dataclass(frozen=True)
class Rejection:
    """A status message the hub read and refused for good, with the hub's reason."""

    message_id: str
    error: str


@dataclass(frozen=True)
class StatusAnswer:
    """A ``POST /status`` answer: ids stored (now or before) and messages refused."""

    accepted: tuple[str, ...]
    rejected: tuple[Rejection, ...] = ()


def parse_accepted(doc: Any) -> list[str]:
    """The ``accepted`` message ids of a ``POST /status`` answer.

    Raises:
        FormatError: not ``{"accepted": [str, ...]}``.
    """
    accepted = doc.get("accepted") if isinstance(doc, dict) else None
    if not isinstance(accepted, list) or not all(isinstance(a, str) for a in accepted):
        raise FormatError("hub status answer must be {'accepted': [message ids]}")
    return list(accepted)


def parse_rejected(doc: Any) -> list[Rejection]:
    """The ``rejected`` entries of a ``POST /status`` answer (absent: none).

    A hub (or an older one) may leave ``rejected`` out; each error text is cut to
    MAX_REJECTION_CHARS, since the agent keeps it.

    Raises:
        FormatError: ``rejected`` is not ``[{"message_id": str, "error": str}, ...]``.
    """
    rejected = doc.get("rejected") if isinstance(doc, dict) else None
    if rejected is None:
        return []
    if not isinstance(rejected, list) or not all(
        isinstance(r, dict) and isinstance(r.get("message_id"), str)
        and isinstance(r.get("error", ""), str) for r in rejected
    ):
        raise FormatError("hub status answer: 'rejected' must be "
                          "[{'message_id': str, 'error': str}]")
    return [Rejection(r["message_id"], (r.get("error") or "rejected")[:MAX_REJECTION_CHARS])
            for r in rejected]


def parse_status_answer(doc: Any) -> StatusAnswer:
    """A whole ``POST /status`` answer (pure).

    Raises:
        FormatError: see parse_accepted and parse_rejected.
    """
    return StatusAnswer(tuple(parse_accepted(doc)), tuple(parse_rejected(doc)))


class HubClient:
    """Calls the device endpoints of one hub. Use as a context manager."""

    def __init__(self, settings: HubSettings, client: httpx.Client | None = None) -> None:
        """Raises UsageError: ``hub.ca_file`` cannot be read."""
        self.settings = settings
        self.base_url = settings.url.rstrip("/")
        if settings.insecure:
            log.warning("hub.insecure = true: plain HTTP to %s is allowed; the device token "
                        "and the hub's answers cross the network unprotected", self.base_url)
        self._http = client or httpx.Client(
            timeout=settings.timeout, verify=client_context(settings.ca_file),
            follow_redirects=False)

    @property
    def http(self) -> httpx.Client:
        """The verifying HTTP client, also for bundle downloads (it follows no redirect)."""
        return self._http

    def offer_refusal(self, offer: BundleOffer) -> str | None:
        """Why OFFER's URL must not be fetched (see :func:`offer_refusal`), or None."""
        return offer_refusal(offer.url, self.base_url, self.settings.bundle_origins)

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.token}"}

    def _call(self, method: str, path: str, *, body: Any = None, limit: int = MAX_RESPONSE_BYTES,
              headers: Mapping[str, str] | None = None,
              ok: tuple[int, ...] = (200,),
              timeout: float | None = None) -> tuple[int, bytes, httpx.Headers]:
        """One request; returns (status, body bytes, headers) for a status in ``ok``.

        ``timeout`` (seconds) overrides the client's for this call.
        """
        url = self.base_url + path
        request_headers = {**self.auth_headers, **(headers or {})}
        content = None if body is None else json.dumps(body).encode()
        if content is not None:
            request_headers["Content-Type"] = "application/json"
        try:
            extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
            with self._http.stream(method, url, headers=request_headers,
                                   content=content, **extra) as resp:
                if resp.status_code not in ok:
                    raise hub_status_error(method, url, resp.status_code, resp.reason_phrase)
                data = bytearray()
                for piece in resp.iter_bytes():
                    data += piece
                    if len(data) > limit:
                        raise FormatError(f"{method} {url}: answer larger than {limit} bytes")
                return resp.status_code, bytes(data), resp.headers
        except httpx.HTTPError as exc:
            failure = tls_failure(exc)
            if failure is not None:
                raise UntrustedCertificateError(
                    f"{method} {url}: refused to talk to the hub: {describe_tls_failure(failure)}"
                    "; nothing was sent (set hub.ca_file to the CA that signed its "
                    "certificate)") from exc
            raise TransferError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _json(data: bytes, what: str) -> Any:
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"hub {what}: answer is not JSON") from exc

    def checkin(self, inventory: Mapping[str, Any]) -> None:
        """``POST /checkin`` with the device's inventory."""
        self._call("POST", f"{API}/checkin", body={"inventory": inventory})

    def post_status(self, messages: Sequence[Mapping[str, Any]]) -> StatusAnswer:
        """``POST /status``; the ids the hub accepted (stored or known) and those it refused."""
        _, data, _ = self._call("POST", f"{API}/status", body={"messages": list(messages)})
        return parse_status_answer(self._json(data, "status"))

    def post_progress(self, digest: str, received: int, size: int, *, resumed: bool = False,
                      timeout: float | None = None) -> None:
        """``POST /progress``: RECEIVED bytes of the bundle DIGEST (of SIZE) are on the device."""
        body: dict[str, Any] = {"bundle": digest, "received": received, "size": size}
        if resumed:
            body["resumed"] = True
        self._call("POST", f"{API}/progress", body=body, timeout=timeout)

    def list_bundles(self) -> list[BundleOffer]:
        """``GET /bundles``: what the hub holds for this device, in download order."""
        _, data, _ = self._call("GET", f"{API}/bundles")
        return download_order(parse_bundle_list(self._json(data, "bundles"), self.base_url))

    def desired_manifest(self, etag: str | None) -> DesiredManifest | None:
        """``GET /desired-manifest``; None when unchanged since ``etag`` (304).

        Raises:
            UnknownObjectError: the hub has no desired manifest for this device yet (404).
        """
        headers = {"If-None-Match": etag} if etag else {}
        status, data, resp_headers = self._call(
            "GET", f"{API}/desired-manifest", headers=headers, limit=MAX_MANIFEST_BYTES,
            ok=(200, 304))
        if status == 304:
            return None
        self._json(data, "desired manifest")  # must be JSON; written as served
        return DesiredManifest(data, resp_headers.get("etag"))

    def download_headers(self, url: str) -> dict[str, str]:
        """Headers for downloading ``url``: the token only when the hub itself serves it."""
        return self.auth_headers if same_origin(url, self.base_url) else {}

    def post_runtime(self, report: Mapping[str, Any]) -> None:
        """``POST /runtime`` with the whole runtime report (docs/device-runtime.md §4)."""
        self._call("POST", f"{API}/runtime", body={"report": dict(report)})

    def runtime_heartbeat(self, digest: str) -> bool:
        """``POST /runtime`` with only the digest of the last report; whether the hub knows it."""
        _, data, _ = self._call("POST", f"{API}/runtime", body={"report_digest": digest})
        answer = self._json(data, "runtime")
        return bool(isinstance(answer, dict) and answer.get("known") is True)
