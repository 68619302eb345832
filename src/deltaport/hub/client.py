"""The operator side's client of a remote hub (``--hub URL --token …``), over httpx.

Each method matches one operator endpoint and returns its JSON. An error answer
``{"error": "StateError", "message": …}`` is raised as that very class of
``deltaport.errors``, so a command run against a remote hub fails with the same
exit code and message as one run against the local database; an answer that names
none is mapped by its status (:func:`deltaport.httperrors.error_for_status`, shared
with the agent). Transport failures become :class:`~deltaport.errors.TransferError`.

https is verified: against ``ca_file`` alone when given (``hub init``'s ``ca.crt``),
else the system trust store. Plain ``http://`` is refused (the operator token would
cross the network in clear) unless ``insecure=True`` or the hub is on this machine
(a loopback address: the token never leaves it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from deltaport import errors
from deltaport.errors import (
    DeltaportError,
    FormatError,
    TransferError,
    UntrustedCertificateError,
    UsageError,
)
from deltaport.httperrors import error_for_status
from deltaport.tlsutil import client_context, describe_tls_failure, is_loopback, tls_failure

API = "/api/v1"
ANSWER_MAX_BYTES = 64 * 1024 * 1024  # any operator answer (a status of 100,000 devices)
DEFAULT_TIMEOUT = 600.0  # seconds: a deploy builds bundles before it answers


def error_from_answer(status: int, body: Any, where: str) -> DeltaportError:
    """The deltaport error an error answer names (by class), else one chosen by status."""
    kind = body.get("error") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    text = f"{where}: {message}" if isinstance(message, str) else f"{where}: HTTP {status}"
    cls = getattr(errors, kind, None) if isinstance(kind, str) else None
    if isinstance(cls, type) and issubclass(cls, DeltaportError):
        if issubclass(cls, errors.AccessError | errors.HubError | errors.RegistryError):
            return cls(text, status)  # these carry the status (and decide transient by it)
        return cls(text)
    return error_for_status(status, text)


def check_hub_url(url: str, *, insecure: bool) -> None:
    """Refuse a URL the operator token must not be sent to.

    Raises:
        UsageError: not http(s)://, or plain http:// to another machine without INSECURE.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"hub URL {url!r} must be https://HOST[:PORT]")
    if parts.scheme == "http" and not insecure and not is_loopback(parts.hostname):
        raise UsageError(
            f"hub URL {url} is plain HTTP: the operator token would cross the network in "
            "clear. Use https:// (with DELTAPORT_HUB_CA_FILE for a private CA), or set "
            "DELTAPORT_HUB_INSECURE=1")


def transport_error(where: str, exc: httpx.HTTPError) -> TransferError:
    """The error for a failed request: an untrusted certificate apart from a dead link."""
    failure = tls_failure(exc)
    if failure is None:
        return TransferError(f"{where}: {exc}")
    return UntrustedCertificateError(f"{where}: {describe_tls_failure(failure)}")


class HubClient:
    """Calls a hub's operator API with an operator token."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        ca_file: Path | None = None,
        insecure: bool = False,
    ) -> None:
        """Raises UsageError: see check_hub_url; CA_FILE unreadable."""
        self.url = url.rstrip("/")
        check_hub_url(self.url, insecure=insecure)
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
            verify=client_context(ca_file),
        )

    def __enter__(self) -> HubClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        where = f"{method} {self.url}{API}{path}"
        try:
            resp = self._http.request(method, API + path, **kwargs)
        except httpx.HTTPError as exc:
            raise transport_error(where, exc) from exc
        if len(resp.content) > ANSWER_MAX_BYTES:
            raise FormatError(f"{where}: answer larger than {ANSWER_MAX_BYTES} bytes")
        try:
            body = resp.json() if resp.content else None
        except ValueError as exc:
            if resp.is_success:
                raise FormatError(f"{where}: answer is not JSON") from exc
            body = None
        if not resp.is_success:
            raise error_from_answer(resp.status_code, body, where)
        return body

    # --- the operator endpoints ---------------------------------------------

    def deploy(
        self,
        manifest: str,
        *,
        by: str,
        email: str,
        devices: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        variables: Mapping[str, str] | None = None,
        manifest_name: str = "manifest",
        priority: int = 0,
        unsigned: bool = False,
        retries: int | None = None,
    ) -> dict[str, Any]:
        """``deltaport deploy``: the deployment set and each device's plan.

        PRIORITY orders the devices' downloads: lower is more urgent. UNSIGNED lets a
        hub without a signing key send unsigned bundles.
        """
        body = {
            "manifest": manifest,
            "devices": list(devices),
            "labels": dict(labels or {}),
            "by": by,
            "email": email,
            "vars": dict(variables or {}),
            "manifest_name": manifest_name,
            "priority": priority,
            "unsigned": unsigned,
            **({"retries": retries} if retries is not None else {}),
        }
        result: dict[str, Any] = self._call("POST", "/deployments", json=body)
        return result

    def activate(self, deployment_id: str) -> dict[str, Any]:
        """``deltaport activate``: {deployment, desired: {device: location}}."""
        result: dict[str, Any] = self._call("POST", f"/deployments/{deployment_id}/activate")
        return result

    def rollout_create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``deltaport rollout create``: the rollout's status (and the plan under ``plan``)."""
        result: dict[str, Any] = self._call("POST", "/rollouts", json=dict(body))
        return result

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        """``deltaport rollout status ID --json``."""
        result: dict[str, Any] = self._call("GET", f"/rollouts/{rollout_id}")
        return result

    def rollout_action(self, rollout_id: str, action: str) -> dict[str, Any]:
        """``deltaport rollout pause|resume|approve|cancel ID``: the rollout's status."""
        result: dict[str, Any] = self._call("POST", f"/rollouts/{rollout_id}/{action}")
        return result

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        """``deltaport status deployment ID``."""
        result: dict[str, Any] = self._call("GET", f"/deployments/{deployment_id}")
        return result

    def deployments(self, *, by: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """``deltaport status deployments [--by USER]``."""
        params: dict[str, Any] = {"limit": limit}
        if by:
            params["by"] = by
        result: list[dict[str, Any]] = self._call("GET", "/deployments", params=params)
        return result

    def device(self, name: str) -> dict[str, Any]:
        """``deltaport status device NAME``."""
        result: dict[str, Any] = self._call("GET", f"/devices/{name}")
        return result

    def image(self, reference: str) -> dict[str, Any]:
        """``deltaport status image NAME:TAG``."""
        result: dict[str, Any] = self._call("GET", f"/images/{reference}")
        return result

    def history(self, *, since: str = "24h", every: str = "hour") -> list[dict[str, Any]]:
        """``deltaport status history``."""
        params = {"since": since, "every": every}
        result: list[dict[str, Any]] = self._call("GET", "/history", params=params)
        return result

    def audit(
        self, *, since: str | None = None, operator: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """``deltaport status audit``: operator changes, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            params["since"] = since
        if operator is not None:
            params["operator"] = operator
        result: list[dict[str, Any]] = self._call("GET", "/audit", params=params)
        return result

    def register_image(
        self,
        reference: str,
        *,
        name: str | None = None,
        build_id: str | None = None,
        by: str | None = None,
        prebuild: bool = False,
    ) -> dict[str, Any]:
        """``deltaport image register``."""
        body = {
            "reference": reference, "name": name, "build_id": build_id, "by": by,
            "prebuild": prebuild,
        }
        result: dict[str, Any] = self._call("POST", "/images", json=body)
        return result

    def add_device(
        self,
        name: str,
        *,
        link_rate: str = "1Mbit",
        labels: Mapping[str, str] | None = None,
        local_registry: str = "localhost:5000",
    ) -> dict[str, Any]:
        """``deltaport device add``: the answer holds the device token (shown once)."""
        body = {
            "name": name,
            "link_rate": link_rate,
            "labels": dict(labels or {}),
            "local_registry": local_registry,
        }
        result: dict[str, Any] = self._call("POST", "/devices", json=body)
        return result

    def label_device(
        self, name: str, labels: Mapping[str, str], remove: Sequence[str] = ()
    ) -> dict[str, Any]:
        """``deltaport device label --hub``: {device, labels} after the change."""
        body = {"set": dict(labels), "remove": list(remove)}
        result: dict[str, Any] = self._call("POST", f"/devices/{name}/labels", json=body)
        return result
