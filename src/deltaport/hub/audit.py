"""Recording operator requests that change something in the audit log (``fleet.audit``).

:class:`AuditMiddleware` wraps the app as plain ASGI: for a write method on an
operator route listed in :data:`ROUTE_ACTIONS` it lets the request run and, before the
answer leaves, records the HTTP status (refusals included; 500 if it raised), who
(the operator token's name), what, on which target, from which address. Reads are
not recorded, and neither is a request without a valid operator token (401: nobody
to name, and an unauthenticated caller must not be able to grow the table).

The target is the route's path parameter when it has one; an endpoint that learns
its target from the body (a device name, an image reference, a new deployment id)
hands it over with :func:`note_target`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deltaport.errors import DeltaportError
from deltaport.fleet import audit
from deltaport.fleet.db import session_scope
from deltaport.hub.auth import bearer_token, operator_for_token
from deltaport.hub.deps import HubState

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ROUTE_ACTIONS: dict[tuple[str, str], audit.AuditAction] = {
    ("POST", "/api/v1/images"): audit.AuditAction.IMAGE_REGISTER,
    ("POST", "/api/v1/devices"): audit.AuditAction.DEVICE_ADD,
    ("POST", "/api/v1/devices/{name}/labels"): audit.AuditAction.DEVICE_LABEL,
    ("POST", "/api/v1/deployments"): audit.AuditAction.DEPLOY,
    ("POST", "/api/v1/deployments/{deployment_id}/activate"): audit.AuditAction.ACTIVATE,
}
TARGET_KEY = "audit_target"  # where note_target leaves the target in the request state


def note_target(request: Request, target: str) -> None:
    """Name what this request acts on, for its audit entry."""
    setattr(request.state, TARGET_KEY, target)


class AuditMiddleware:
    """ASGI middleware recording operator writes (see the module docstring)."""

    def __init__(self, app: ASGIApp, hub: HubState) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        recorded = False

        async def record_once(status: int) -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            entry = self._entry(scope, status)
            if entry is not None:
                await run_in_threadpool(self._write, entry)

        async def send_recording_first(message: Message) -> None:
            # written before the answer leaves: a client that reads the log next finds it
            if message["type"] == "http.response.start":
                await record_once(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_recording_first)
        finally:
            await record_once(500)  # the app raised before answering

    def _entry(self, scope: Scope, status: int) -> audit.AuditRecord | None:
        route = scope.get("route")
        action = ROUTE_ACTIONS.get((scope["method"], getattr(route, "path", "")))
        if action is None:
            return None
        operator = self._operator(scope)
        if operator is None:
            return None
        params: dict[str, Any] = scope.get("path_params") or {}
        state: dict[str, Any] = scope.get("state") or {}
        target = state.get(TARGET_KEY) or next((str(v) for v in params.values()), None)
        client = scope.get("client")
        remote = str(client[0]) if client else "?"
        return audit.AuditRecord(operator, action, target, remote, status)

    def _operator(self, scope: Scope) -> str | None:
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value.decode("latin-1")
        try:
            return operator_for_token(self.hub.settings.operators, bearer_token(header)).name
        except DeltaportError:
            return None

    def _write(self, entry: audit.AuditRecord) -> None:
        try:
            with session_scope(self.hub.engine) as session:
                audit.record(session, entry)
        except DeltaportError as exc:  # the answer is sent: say so loudly, do not hide it
            log.error("audit log: could not record %s: %s", audit.summary(entry), exc)
