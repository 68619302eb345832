"""What every dashboard route shares: templates, security headers, who is signed in, forms.

Pages are rendered by :func:`render` (Jinja2, autoescaped: a device named
``<img src=x onerror=…>`` is shown as text), always with a strict
Content-Security-Policy: scripts and styles only from the hub's own ``/ui/static``,
nothing inline, no eval (htmx is configured by a ``<meta>`` tag, not a script).
A request without a live session gets no data: :func:`signed_in` raises
:class:`NotSignedIn`, answered 303 to the login page (``install`` registers that).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from deltaport.errors import AccessError, DeltaportError
from deltaport.fleet.db import session_scope
from deltaport.hub.deps import Hub, read_limited
from deltaport.hub.errors import status_for
from deltaport.hub.ui.sessions import COOKIE, SignedIn, csrf_ok, find_session

PREFIX = "/ui"
FORM_MAX = 16 * 1024  # bytes of a dashboard form (a token, a CSRF token, a few ids)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class UiConfig:
    """The dashboard's fixed choices (the same on every hub of a fleet)."""

    online_within_seconds: int = 180  # online: checked in this recently (6 agent passes of 30 s)
    page_size: int = 50  # rows per page of every list
    poll_seconds: int = 4  # how often live fragments refresh


CONFIG = UiConfig()


class NotSignedIn(Exception):
    """No live session: answered with a redirect to the login page (never with data)."""

    def __init__(self, next_path: str) -> None:
        super().__init__("not signed in")
        self.next_path = next_path


def path_segment(value: object) -> str:
    """VALUE quoted for one URL path segment (``/`` too: names may hold anything)."""
    return quote(str(value), safe="")


def query_value(value: object) -> str:
    """VALUE quoted for a query string."""
    return quote(str(value), safe="")


def human_bytes(n: int | float | None) -> str:
    """1536 → '1.5 KiB' (binary units, one decimal)."""
    if n is None:
        return "–"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def human_seconds(s: float | None) -> str:
    """3725 → '1 h 2 min'; None → '–'."""
    if s is None:
        return "–"
    if s < 0:
        return "−" + human_seconds(-s)
    s = int(s)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def when(value: datetime | None) -> str:
    """A timestamp as the dashboard shows it (UTC, to the second)."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "never"


def epoch(value: int) -> str:
    """Unix seconds as the dashboard shows a time."""
    return when(datetime.fromtimestamp(value, UTC))


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("deltaport.hub.ui", "templates"),
        autoescape=select_autoescape(["html"], default=True),
    )
    env.filters.update(seg=path_segment, q=query_value, bytes=human_bytes,
                       secs=human_seconds, when=when, epoch=epoch)
    env.globals.update(prefix=PREFIX, poll=CONFIG.poll_seconds)
    return env


TEMPLATES = _environment()


def render(template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """TEMPLATE rendered with CONTEXT, with the dashboard's security headers."""
    html = TEMPLATES.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def error_page(exc: DeltaportError, me: SignedIn | None) -> HTMLResponse:
    """A DeltaportError as an HTML page with the status the API would answer."""
    status = status_for(exc)
    return render("error.html", {"me": me, "status": status, "message": str(exc)}, status)


def signed_in(request: Request, hub: Hub) -> SignedIn:
    """Who this request's session cookie belongs to.

    Raises:
        NotSignedIn: no cookie, or an unknown or expired session.
    """
    secret = request.cookies.get(COOKIE)
    with session_scope(hub.engine) as session:
        me = find_session(session, secret)
    if me is None:
        raise NotSignedIn(request.url.path)
    return me


Me = Annotated[SignedIn, Depends(signed_in)]


async def form_fields(request: Request, hub: Hub) -> dict[str, str]:
    """The POSTed form (``application/x-www-form-urlencoded``), first value of each field."""
    body = await read_limited(request, FORM_MAX)
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


Form = Annotated[dict[str, str], Depends(form_fields)]


def check_csrf(me: SignedIn, form: dict[str, str]) -> None:
    """Refuse a form whose ``csrf`` field is not the session's token.

    Raises:
        AccessError: (403) missing or wrong CSRF token.
    """
    if not csrf_ok(me, form.get("csrf")):
        raise AccessError("the form's CSRF token is missing or wrong: reload the page", 403)


def check_may_act(me: SignedIn) -> None:
    """Refuse a viewer.

    Raises:
        AccessError: (403) the session's role is viewer.
    """
    if not me.may_act:
        raise AccessError(f"operator {me.operator!r} is a viewer: it may only look", 403)


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a dashboard path of this hub, else the overview."""
    if path and path.startswith(PREFIX + "/") and not path.startswith("//") and "\\" not in path:
        return path
    return PREFIX + "/"


def redirect(path: str) -> Response:
    """A 303 (See Other) to PATH, with the security headers."""
    return RedirectResponse(path, status_code=303, headers=SECURITY_HEADERS)


def is_https(request: Request, hub: Hub) -> bool:
    """Whether the browser reached us over https (the cookie is then Secure)."""
    return request.url.scheme == "https" or hub.settings.tls is not None


def parse_page(text: str | None) -> int:
    """A ``page`` query value as a page number, 1 for anything unusable."""
    if text and text.isdigit() and len(text) < 8:
        return max(1, int(text))
    return 1
