"""Signing in and out of the dashboard with an operator token.

``GET /ui/login`` shows the form and sets a short-lived pre-session cookie whose value
the form carries back (a double-submit CSRF check: another site cannot sign a browser
in to a session of its choosing). ``POST /ui/login`` takes the form field ``token``:
only an operator token of the hub config opens a session (a device token does not).
``POST /ui/logout`` (CSRF-checked) forgets the session.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from deltaport.errors import AccessError
from deltaport.fleet.db import session_scope
from deltaport.hub.auth import TOKEN_MAX_CHARS, operator_for_token
from deltaport.hub.deps import Hub
from deltaport.hub.ui.sessions import COOKIE, SESSION_TTL, close_session, open_session
from deltaport.hub.ui.web import (
    PREFIX,
    Form,
    Me,
    check_csrf,
    error_page,
    is_https,
    redirect,
    render,
    safe_next,
)

router = APIRouter(prefix=PREFIX, include_in_schema=False)
LOGIN_COOKIE = "deltaport_login"  # the pre-session CSRF value of the login form
LOGIN_COOKIE_SECONDS = 3600


def _login_form(request: Request, hub: Hub, *, message: str | None = None,
                next_path: str | None = None, status: int = 200) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    page = render("login.html", {"me": None, "nonce": nonce, "message": message,
                                 "next": safe_next(next_path)}, status)
    page.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_COOKIE_SECONDS, path=PREFIX,
                    httponly=True, samesite="strict", secure=is_https(request, hub))
    return page


@router.get("/login")
def login_page(request: Request, hub: Hub, next: str | None = None) -> HTMLResponse:
    """The sign-in form."""
    return _login_form(request, hub, next_path=next)


@router.post("/login")
def login(request: Request, hub: Hub, form: Form) -> Response:
    """Exchange an operator token for a session cookie; a wrong token gets the form again."""
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(nonce, form.get("nonce", "")):
        return _login_form(request, hub, message="The form expired: please sign in again.",
                           status=403)
    token = form.get("token", "").strip()
    try:
        if not token or len(token) > TOKEN_MAX_CHARS:
            raise AccessError("no token given", 401)
        operator = operator_for_token(hub.settings.operators, token)
    except AccessError:
        return _login_form(request, hub, message="That is not an operator token of this hub.",
                           next_path=form.get("next"), status=401)
    with session_scope(hub.engine) as session:
        secret, _me = open_session(session, operator)
    answer = redirect(safe_next(form.get("next")))
    answer.set_cookie(COOKIE, secret, max_age=int(SESSION_TTL.total_seconds()), path=PREFIX,
                      httponly=True, samesite="strict", secure=is_https(request, hub))
    answer.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return answer


@router.post("/logout")
def logout(request: Request, hub: Hub, me: Me, form: Form) -> Response:
    """Sign out: the session is deleted on the hub, the cookie in the browser."""
    try:
        check_csrf(me, form)
    except AccessError as exc:
        return error_page(exc, me)
    with session_scope(hub.engine) as session:
        close_session(session, request.cookies.get(COOKIE))
    answer = redirect(f"{PREFIX}/login")
    answer.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict",
                         secure=is_https(request, hub))
    return answer
