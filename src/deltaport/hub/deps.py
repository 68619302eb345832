"""The request dependencies, as ``Annotated`` types: the hub's state, who is calling, the body.

Routers declare what they need (``device: CurrentDevice``, ``body: DeviceBody``) and
never read headers, app state or the raw request themselves. The hub's state is
built once by the app factory and hung on ``app.state.hub``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from deltaport.errors import AccessError, FormatError
from deltaport.fleet.db import session_scope
from deltaport.fleet.models import Device
from deltaport.hub.auth import bearer_token, device_for_token, operator_for_token
from deltaport.hub.settings import HubServerSettings, OperatorToken
from deltaport.hub.toolkit import Toolkit
from deltaport.notify.email import Notifier
from deltaport.pipelines.retry_policy import RetryPolicy
from deltaport.storage.base import BundleStore


@dataclass(frozen=True)
class HubState:
    """What every request may use: settings, the database engine, the store, email, tools."""

    settings: HubServerSettings
    engine: Engine
    store: BundleStore
    notifier: Notifier | None
    toolkit: Toolkit
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)  # [retries] in hub.toml


def get_hub(request: Request) -> HubState:
    """The hub's state (set by the app factory)."""
    state: HubState = request.app.state.hub
    return state


Hub = Annotated[HubState, Depends(get_hub)]


def get_device(request: Request, hub: Hub) -> Device:
    """The device the bearer token belongs to (401 otherwise). A detached row."""
    token = bearer_token(request.headers.get("Authorization"))
    with session_scope(hub.engine) as session:
        device = device_for_token(session, token)
        session.expunge(device)
    return device


CurrentDevice = Annotated[Device, Depends(get_device)]


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_operator(request: Request, hub: Hub) -> OperatorToken:
    """The operator the bearer token belongs to (401 otherwise).

    A ``viewer`` token may only read: any other method is refused (403).
    """
    token = bearer_token(request.headers.get("Authorization"))
    found = operator_for_token(hub.settings.operators, token)
    if request.method not in READ_METHODS and not found.may_act:
        raise AccessError(f"operator {found.name!r} is a viewer: it may only read", 403)
    return found


CurrentOperator = Annotated[OperatorToken, Depends(get_operator)]


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing (FormatError) more than LIMIT bytes while it streams in."""
    declared = request.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise FormatError(f"request body is larger than {limit} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise FormatError(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def device_body(request: Request, hub: Hub) -> bytes:
    """A device's request body, at most ``limits.device_body_max`` bytes."""
    return await read_limited(request, hub.settings.limits.device_body_max)


async def operator_body(request: Request, hub: Hub) -> bytes:
    """An operator's request body, at most ``limits.operator_body_max`` bytes."""
    return await read_limited(request, hub.settings.limits.operator_body_max)


DeviceBody = Annotated[bytes, Depends(device_body)]
OperatorBody = Annotated[bytes, Depends(operator_body)]
