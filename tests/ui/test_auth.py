"""Dashboard sign-in, sessions, CSRF and headers, through the real app (no browser)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.models import UiSession, utcnow
from deltaport.hub.app import create_app
from deltaport.hub.settings import OperatorToken
from deltaport.hub.ui.sessions import COOKIE, find_session, open_session
from tests.hub.conftest import World, fake_toolkit
from tests.ui.conftest import csrf_of, sign_in

PAGES = ["/ui/", "/ui/live/overview", "/ui/deployments", "/ui/devices", "/ui/devices/dev-1",
         "/ui/images", "/ui/images/cloud.example:5000/demo/app:v2", "/ui/deployments/x",
         "/ui/live/deployments/x"]


@pytest.mark.parametrize("path", PAGES)
def test_without_a_session_every_page_is_the_way_to_sign_in(app_client: TestClient,
                                                           path: str) -> None:
    answer = app_client.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/ui/login?next=")
    assert "dev-1" not in answer.text and "alice" not in answer.text


def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_it(
        app_client: TestClient) -> None:
    signed = sign_in(app_client, next_path="/ui/devices")
    assert signed.status_code == 303 and signed.headers["location"] == "/ui/devices"
    cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http (loopback); see the https test
    page = app_client.get("/ui/")
    assert page.status_code == 200 and 'id="n-devices">2<' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "<script>" not in page.text and " on" + "click=" not in page.text
    refused = app_client.post("/ui/logout", data={"csrf": "wrong"})
    assert refused.status_code == 403
    assert app_client.get("/ui/").status_code == 200  # still signed in
    out = app_client.post("/ui/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303
    assert app_client.get("/ui/").status_code == 303


def test_a_device_token_or_a_wrong_token_does_not_sign_in(app_client: TestClient,
                                                          world: World) -> None:
    for token in (world.tokens["dev-1"], "nope", ""):
        answer = sign_in(app_client, token=token)
        assert answer.status_code == 401, token
        assert COOKIE not in answer.headers.get("set-cookie", "")
        assert "not an operator token" in answer.text
    assert app_client.get("/ui/").status_code == 303


def test_a_login_post_without_the_forms_nonce_is_refused(app_client: TestClient) -> None:
    from tests.hub.conftest import OPERATOR_TOKEN

    answer = app_client.post("/ui/login", data={"token": OPERATOR_TOKEN, "nonce": "forged"})
    assert answer.status_code == 403
    assert COOKIE not in answer.headers.get("set-cookie", "")


def test_an_outside_next_is_not_followed(app_client: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/ui/", "/api/v1/devices"):
        assert sign_in(app_client, next_path=target).headers["location"] == "/ui/"


def test_over_https_the_cookie_is_secure(world: World) -> None:
    app = create_app(world.settings(), toolkit=fake_toolkit(world.registry))
    with TestClient(app, base_url="https://hub.example", follow_redirects=False) as client:
        signed = sign_in(client)
        cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith(COOKIE))
        assert "Secure" in cookie


def test_sessions_expire_and_live_in_the_database(any_world: World) -> None:
    engine = init_db(any_world.db_url)
    try:
        op = OperatorToken("ops", "sha256:" + "0" * 64)
        with session_scope(engine) as s:
            secret, me = open_session(s, op)
        with session_scope(engine) as s:
            found = find_session(s, secret)
            assert found is not None and found.operator == "ops" and found.csrf == me.csrf
            assert find_session(s, secret, now=utcnow() + timedelta(hours=9)) is None
            assert find_session(s, "x" + secret) is None and find_session(s, None) is None
            s.execute(update(UiSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        with session_scope(engine) as s:
            assert find_session(s, secret) is None
            _, _ = open_session(s, op)  # purges the expired one
        with session_scope(engine) as s:
            assert s.query(UiSession).count() == 1
    finally:
        engine.dispose()
