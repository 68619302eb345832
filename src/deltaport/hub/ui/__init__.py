"""The fleet dashboard, served by the hub under ``/ui/`` (issue 12).

Server-rendered HTML (Jinja2, autoescaped) with htmx, vendored under ``static/vendor``
(``scripts/vendor_ui_assets.py``), for live fragments: no CDN, no node, no inline
script. Operators sign in with their operator token (:mod:`.views_auth`, sessions in
:mod:`.sessions`); the pages read aggregate queries (:mod:`.queries`); the routes are
split by area (``views_*.py``). :func:`install` mounts it all on the hub's app.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from deltaport.hub.ui import (
    views_actions,
    views_auth,
    views_deployments,
    views_devices,
    views_fleet,
    views_history,
    views_images,
)
from deltaport.hub.ui.web import PREFIX, NotSignedIn, query_value, redirect


async def _not_signed_in(request: Request, exc: Exception) -> Response:
    """No session: to the login page, remembering where the operator wanted to go."""
    assert isinstance(exc, NotSignedIn)
    answer = redirect(f"{PREFIX}/login?next={query_value(exc.next_path)}")
    if request.headers.get("HX-Request"):  # a live fragment: make htmx load the whole page
        answer.headers["HX-Redirect"] = f"{PREFIX}/login"
    return answer


def install(app: FastAPI) -> None:
    """Mount the dashboard's routes and static files on APP."""
    static = files("deltaport.hub.ui") / "static"
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(static)), name="ui-static")
    app.add_exception_handler(NotSignedIn, _not_signed_in)
    for module in (views_auth, views_fleet, views_deployments, views_devices, views_images,
                   views_history, views_actions):
        app.include_router(module.router)
