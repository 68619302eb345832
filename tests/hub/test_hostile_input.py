"""Hostile or broken device input is a 422 FormatError, never a 500 (issue 11, item 6)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.hub.conftest import LiveHub
from tests.hub.test_device_api import API, message


def _post_status(hub: LiveHub, body: bytes) -> Any:
    with hub.device("dev-1") as c:
        return c.post(API + "/status", content=body, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    "at",
    [
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "9999-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
    ],
)
def test_device_times_out_of_range_are_422(hub: LiveHub, at: str) -> None:
    body = json.dumps({"messages": [message(hub.world, "dev-1", at=at)]}).encode()
    r = _post_status(hub, body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "FormatError"


@pytest.mark.parametrize("field", ["message_id", "device"])
def test_lone_surrogate_is_422(hub: LiveHub, field: str) -> None:
    doc = message(hub.world, "dev-1")
    doc[field] = "PLACEHOLDER"
    body = json.dumps({"messages": [doc]}).replace("PLACEHOLDER", "a\\ud800").encode()
    r = _post_status(hub, body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "FormatError"


def test_huge_integer_is_422(hub: LiveHub) -> None:
    doc = {
        "message_id": str(uuid.uuid4()),
        "kind": "activation",
        "device": "dev-1",
        "deployment": hub.world.deployment,
        "version": "PLACEHOLDER",
        "outcome": "active",
    }
    body = json.dumps({"messages": [doc]}).replace('"PLACEHOLDER"', "9" * 5000).encode()
    r = _post_status(hub, body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "FormatError"


@pytest.mark.parametrize("endpoint", ["/status", "/checkin", "/runtime"])
def test_deep_nesting_is_422(hub: LiveHub, endpoint: str) -> None:
    body = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with hub.device("dev-1") as c:
        r = c.post(API + endpoint, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "FormatError"


def test_overlong_message_id_is_422(hub: LiveHub) -> None:
    body = json.dumps({"messages": [message(hub.world, "dev-1", message_id="m" * 300)]})
    r = _post_status(hub, body.encode())
    assert r.status_code == 422, r.text


@pytest.mark.parametrize(
    "since", ["99999999999999999d", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
)
def test_history_with_extreme_since_is_422(hub: LiveHub, since: str) -> None:
    with hub.operator() as c:
        r = c.get("/api/v1/history", params={"since": since})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "FormatError"


def test_openapi_declares_the_real_constraints(hub: LiveHub) -> None:
    with hub.operator() as c:
        doc = c.get("/openapi.json").json()
    text = json.dumps(doc)
    assert "^sha256:[0-9a-f]{64}$" in text
    assert '"present"' in text and '"removed"' in text
    assert '"maxLength": 200' in text
