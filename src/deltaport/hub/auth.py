"""Who is calling: a device by its token, or an operator by theirs. Tokens are stored hashed.

Device tokens are minted by ``deltaport device add`` and stored as
``sha256:<hex>`` (``deltaport.fleet.queries.hash_token``). The hub hashes the
presented token, finds the device by that hash, and compares the hashes again with
``hmac.compare_digest``: the lookup by hash leaks nothing useful (an attacker cannot
choose inputs hashing near a stored hash), and the final check is constant-time.
Operator tokens (few, from the hub config file) are all compared in constant time,
with no early exit.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from deltaport.errors import AccessError
from deltaport.fleet.models import Device
from deltaport.fleet.queries import hash_token
from deltaport.hub.settings import OperatorToken

TOKEN_MAX_CHARS = 512  # a bearer token longer than this is not one of ours


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header.

    Raises:
        AccessError: (401) no header, another scheme, or an unreasonable token.
    """
    if not header:
        raise AccessError("missing Authorization: Bearer token", 401)
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > TOKEN_MAX_CHARS:
        raise AccessError("Authorization must be 'Bearer <token>'", 401)
    return token


def device_for_token(session: Session, token: str) -> Device:
    """The device whose token is TOKEN.

    Raises:
        AccessError: (401) no device has this token.
    """
    presented = hash_token(token)
    device = session.scalar(select(Device).where(Device.token_hash == presented))
    if device is None or not hmac.compare_digest(device.token_hash, presented):
        raise AccessError("unknown device token", 401)
    return device


def operator_for_token(operators: Sequence[OperatorToken], token: str) -> OperatorToken:
    """The operator whose token is TOKEN (every entry compared, constant time each).

    Raises:
        AccessError: (401) no operator has this token.
    """
    presented = hash_token(token)
    found = None
    for op in operators:
        if hmac.compare_digest(op.token_hash, presented):
            found = op
    if found is None:
        raise AccessError("unknown operator token", 401)
    return found
