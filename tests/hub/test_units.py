"""Fast tests of the hub's pure parts: Range rules, error mapping, settings, the client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deltaport import errors
from deltaport.errors import (
    AccessError,
    FormatError,
    MissingSourceError,
    NotFoundError,
    StateError,
    StorageError,
    TransferError,
    UsageError,
)
from deltaport.fleet.queries import hash_token
from deltaport.hub.auth import bearer_token, operator_for_token
from deltaport.hub.client import HubClient, error_from_answer
from deltaport.hub.device import etag_matches, manifest_etag
from deltaport.hub.errors import status_for
from deltaport.hub.ranges import Unsatisfiable, choose_slice
from deltaport.hub.settings import (
    OperatorToken,
    add_operator_token,
    load_hub_settings,
    read_hub_config,
)

# --- Range -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, (0, 10, False)),
        ("bytes=0-0", 10, (0, 1, True)),
        ("bytes=2-", 10, (2, 10, True)),
        ("bytes=2-100", 10, (2, 10, True)),
        ("bytes=-3", 10, (7, 10, True)),
        ("bytes=-30", 10, (0, 10, True)),
        ("bytes=5-2", 10, (0, 10, False)),  # invalid: ignored
        ("bytes=0-1,4-5", 10, (0, 10, False)),  # several ranges: whole file
        ("items=0-1", 10, (0, 10, False)),
        ("bytes=-", 10, (0, 10, False)),
        ("bytes=" + "9" * 300, 10, (0, 10, False)),
    ],
)
def test_choose_slice(header: str | None, size: int, expected: tuple[int, int, bool]) -> None:
    s = choose_slice(header, size)
    assert (s.start, s.end, s.partial) == expected


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=10-20", "bytes=-0", "bytes=0-"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        choose_slice(header, 10 if header != "bytes=0-" else 0)


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 10_000))
def test_a_satisfiable_range_lies_inside_the_file(a: int, b: int, size: int) -> None:
    try:
        s = choose_slice(f"bytes={a}-{b}", size)
    except Unsatisfiable:
        assert a >= size
        return
    assert 0 <= s.start < s.end <= size
    if s.partial:
        assert s.start == a and s.end == min(b + 1, size)
        assert s.content_range == f"bytes {a}-{s.end - 1}/{size}"


def test_etags() -> None:
    tag = manifest_etag(b"{}")
    assert etag_matches(tag, tag) and etag_matches(f"W/{tag}", tag)
    assert etag_matches(f'"x", {tag}', tag) and etag_matches("*", tag)
    assert not etag_matches(None, tag) and not etag_matches('"x"', tag)
    assert manifest_etag(b"{}") != manifest_etag(b"[]")


# --- errors → HTTP ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (AccessError("x", 401), 401),
        (AccessError("x", 403), 403),
        (UsageError("x"), 400),
        (FormatError("x"), 422),
        (errors.TruncatedError("x"), 422),
        (errors.UnknownObjectError("unknown device 'a'"), 404),
        (errors.UnknownObjectError("image 'a:b' is not registered (run: …)"), 404),
        (errors.UnknownObjectError("any text at all"), 404),  # by class, not by message
        (StateError("image 'a:b' is not registered (run: …)"), 409),
        (StateError("unknown bundle sha256:…"), 409),  # a plain StateError: by class, 409
        (StateError("deployment d cannot be activated: 1 image(s) missing"), 409),
        (StateError("device image cannot go from absent on failed"), 409),
        (NotFoundError("manifest unknown"), 404),
        (TransferError("smtp down"), 502),
        (MissingSourceError("x"), 409),
        (StorageError("database is locked"), 503),
        (errors.DeltaportError("x"), 500),
    ],
)
def test_status_for(exc: errors.DeltaportError, status: int) -> None:
    assert status_for(exc) == status


def test_error_from_answer_rebuilds_the_class() -> None:
    err = error_from_answer(409, {"error": "StateError", "message": "m"}, "POST /x")
    assert type(err) is StateError and str(err) == "POST /x: m" and err.exit_code == 10
    acc = error_from_answer(403, {"error": "AccessError", "message": "no"}, "GET /y")
    assert isinstance(acc, AccessError) and acc.status == 403
    assert type(error_from_answer(404, {"error": "Exception"}, "w")) is errors.UnknownObjectError
    assert type(error_from_answer(404, None, "w")) is errors.UnknownObjectError
    assert isinstance(error_from_answer(503, "oops", "w"), TransferError)
    assert isinstance(error_from_answer(400, None, "w"), FormatError)


def test_client_maps_transport_and_answers() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer t0k"
        if request.url.path == "/api/v1/devices/a":
            return httpx.Response(200, json={"device": "a"})
        if request.url.path == "/api/v1/history":
            return httpx.Response(200, content=b"<html>")
        return httpx.Response(404, json={"error": "StateError", "message": "unknown device"})

    with HubClient("https://hub", "t0k", transport=httpx.MockTransport(handler)) as hc:
        assert hc.device("a") == {"device": "a"}
        with pytest.raises(StateError, match="unknown device"):
            hc.device("b")
        with pytest.raises(FormatError, match="not JSON"):
            hc.history()
    with HubClient("http://127.0.0.1:9", "t", timeout=2) as hc, pytest.raises(TransferError):
        hc.deployments()


# --- auth and settings ---------------------------------------------------------------


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    for bad in (None, "", "Bearer", "Bearer ", "Basic abc", "Bearer " + "x" * 600):
        with pytest.raises(AccessError):
            bearer_token(bad)


def test_operator_for_token() -> None:
    ops = (OperatorToken("a", hash_token("ta")), OperatorToken("b", hash_token("tb")))
    assert operator_for_token(ops, "tb").name == "b"
    with pytest.raises(AccessError):
        operator_for_token(ops, "tc")
    with pytest.raises(AccessError):
        operator_for_token((), "ta")


def test_operator_tokens_in_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "hub.toml"
    cfg.write_text('port = 9000\nhost = "0.0.0.0"\n')
    alice = add_operator_token(cfg, "alice")
    bob = add_operator_token(cfg, "bob@ops")
    assert alice not in cfg.read_text() and hash_token(alice) in cfg.read_text()
    assert (cfg.stat().st_mode & 0o777) == 0o600
    with pytest.raises(StateError, match="already has a token"):
        add_operator_token(cfg, "alice")
    with pytest.raises(UsageError):
        add_operator_token(cfg, "no spaces")
    s = load_hub_settings(config=cfg, data_dir=tmp_path / "d", env={})
    assert (s.host, s.port) == ("0.0.0.0", 9000)
    assert operator_for_token(s.operators, bob).name == "bob@ops"
    assert s.fleet.db_url == f"sqlite:///{tmp_path / 'd' / 'deltaport.db'}"
    fresh = tmp_path / "new" / "hub.toml"
    assert add_operator_token(fresh, "carol") and read_hub_config(fresh)["operators"]


def test_settings_precedence(tmp_path: Path) -> None:
    (tmp_path / "hub.toml").write_text("port = 9000\n")
    env = {"DELTAPORT_HOME": str(tmp_path), "DELTAPORT_HUB_PORT": "9100"}
    assert load_hub_settings(env=env).port == 9100
    assert load_hub_settings(env=env, port=9200).port == 9200
    assert load_hub_settings(env={"DELTAPORT_HOME": str(tmp_path)}).port == 9000
    other = tmp_path / "other.toml"
    other.write_text("registry_insecure = true\n")
    s = load_hub_settings(env={**env, "DELTAPORT_HUB_CONFIG": str(other)})
    assert s.registry_insecure and s.config_path == other


@pytest.mark.parametrize(
    "text",
    [
        "port = 'x'",
        "port = 70000",
        "registry_insecure = 'yes'",
        "[[operators]]\nname = 'a'\n",
        "[[operators]]\nname = 'a b'\ntoken_hash = 'sha256:" + "0" * 64 + "'\n",
        "not toml =",
    ],
)
def test_bad_config_files(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "hub.toml"
    cfg.write_text(text)
    with pytest.raises(FormatError):
        load_hub_settings(config=cfg, data_dir=tmp_path, env={})


def test_json_is_what_the_client_sends() -> None:
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        return httpx.Response(200, json={"deployment": "d-1"})

    with HubClient("https://hub/", "t", transport=httpx.MockTransport(handler)) as hc:
        hc.deploy(
            "services: {}",
            by="u",
            email="e@x",
            devices=["a"],
            labels={"k": "v"},
            variables={"T": "1"},
            priority=-3,
        )
    assert seen == {
        "manifest": "services: {}",
        "devices": ["a"],
        "labels": {"k": "v"},
        "by": "u",
        "email": "e@x",
        "vars": {"T": "1"},
        "manifest_name": "manifest",
        "priority": -3,
        "unsigned": False,
    }


def test_remote_hub_options() -> None:
    from deltaport.cli.hub import remote_hub

    assert remote_hub(None, "t") is None and remote_hub("", None) is None
    with pytest.raises(UsageError, match="--token"):
        remote_hub("http://hub:8080", None)
    client = remote_hub("https://hub:8080/", "t")
    assert client is not None and client.url == "https://hub:8080"
    client.close()


def test_cli_start_up_imports_nothing_heavy() -> None:
    """Assembling every command must not import FastAPI, SQLAlchemy, alembic or httpx.

    ``deltaport.hub`` exports lazily and the command modules import the fleet, hub
    and agent code inside the commands: eager imports cost each command ~1 s.
    """
    code = (
        "import sys, typer.main, deltaport.cli.main as m; m._register_groups(); "
        "typer.main.get_command(m.app); "
        "print(sorted({k.split('.')[0] for k in sys.modules} & "
        "{'fastapi', 'sqlalchemy', 'alembic', 'httpx', 'uvicorn', 'pydantic', 'yaml'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
