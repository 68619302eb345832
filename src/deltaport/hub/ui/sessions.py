"""Dashboard sessions: an operator token exchanged for a cookie, kept in ``ui_sessions``.

The cookie carries a random secret; the table keeps only its sha256, so a database
dump opens no session. Each session has its own CSRF token, which every form posts
back. Sessions live in the database so every hub behind a balancer knows them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from deltaport.fleet.models import UiSession, utcnow
from deltaport.hub.settings import OperatorRole, OperatorToken

COOKIE = "deltaport_session"
SESSION_TTL = timedelta(hours=8)


@dataclass(frozen=True)
class SignedIn:
    """Who a valid session belongs to, and the CSRF token its forms must carry."""

    operator: str
    role: OperatorRole
    csrf: str
    expires_at: datetime

    @property
    def may_act(self) -> bool:
        return self.role is OperatorRole.OPERATOR


def _session_id(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def open_session(
    session: Session, operator: OperatorToken, now: datetime | None = None
) -> tuple[str, SignedIn]:
    """A new session for OPERATOR: (the cookie's secret, the session). Purges expired ones."""
    now = now or utcnow()
    session.execute(delete(UiSession).where(UiSession.expires_at < now))
    secret = secrets.token_urlsafe(32)
    row = UiSession(
        id=_session_id(secret), operator=operator.name, role=operator.role.value,
        csrf=secrets.token_urlsafe(32), created_at=now, expires_at=now + SESSION_TTL,
    )
    session.add(row)
    return secret, SignedIn(row.operator, operator.role, row.csrf, row.expires_at)


def find_session(
    session: Session, secret: str | None, now: datetime | None = None
) -> SignedIn | None:
    """The live session whose cookie secret is SECRET, or None (missing, unknown, expired)."""
    if not secret or len(secret) > 200:
        return None
    row = session.get(UiSession, _session_id(secret))
    if row is None or row.expires_at <= (now or utcnow()):
        return None
    return SignedIn(row.operator, OperatorRole(row.role), row.csrf, row.expires_at)


def close_session(session: Session, secret: str | None) -> None:
    """Sign out: forget the session of SECRET (nothing if there is none)."""
    if secret:
        session.execute(delete(UiSession).where(UiSession.id == _session_id(secret)))


def csrf_ok(signed_in: SignedIn, presented: str | None) -> bool:
    """True if PRESENTED is the session's CSRF token (constant-time compare)."""
    return bool(presented) and hmac.compare_digest(signed_in.csrf, presented or "")
