"""Operator roles: ``hub token create --role viewer`` mints a token that may only read."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from deltaport.errors import FormatError
from deltaport.fleet.queries import hash_token
from deltaport.hub.settings import (
    OperatorRole,
    OperatorToken,
    load_hub_settings,
    parse_operators,
)
from tests.hub.conftest import OPERATOR_TOKEN, ROOT, World, hub_in_thread

VIEWER_TOKEN = "viewer-secret-token-for-tests-0123456789"


def test_cli_names_the_role_and_the_config_keeps_it(tmp_path: Path) -> None:
    data = tmp_path / "data"

    def create(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deltaport.cli.main", "hub", "token", "create",
             "--data-dir", str(data), "--json", *extra],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    viewer = create("--operator", "vera", "--role", "viewer")
    assert viewer.returncode == 0, viewer.stderr
    assert json.loads(viewer.stdout)["role"] == "viewer"
    assert create("--operator", "otto").returncode == 0  # default role: operator
    bad = create("--operator", "eve", "--role", "admin")
    assert bad.returncode != 0 and "--role" in bad.stderr + bad.stdout
    ops = load_hub_settings(data_dir=data, env={}).operators
    assert {o.name: o.role for o in ops} == {
        "vera": OperatorRole.VIEWER, "otto": OperatorRole.OPERATOR
    }
    assert [o.may_act for o in ops] == [False, True]


def test_a_token_without_role_is_an_operator_and_a_bad_role_is_refused() -> None:
    digest = hash_token("x" * 40)
    (old,) = parse_operators([{"name": "old", "token_hash": digest}])
    assert old.role is OperatorRole.OPERATOR
    with pytest.raises(FormatError, match="role"):
        parse_operators([{"name": "bad", "token_hash": digest, "role": "root"}])


def test_viewer_reads_but_may_not_act(world: World) -> None:
    settings = world.settings()
    settings = dataclasses.replace(settings, operators=(
        *settings.operators, OperatorToken("vera", hash_token(VIEWER_TOKEN), OperatorRole.VIEWER)
    ))
    with hub_in_thread(settings) as url:
        def call(token: str, method: str, path: str) -> httpx.Response:
            return httpx.request(method, f"{url}/api/v1{path}", timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})

        assert call(VIEWER_TOKEN, "GET", f"/deployments/{world.deployment}").status_code == 200
        assert call(VIEWER_TOKEN, "GET", "/devices/dev-1").status_code == 200
        refused = call(VIEWER_TOKEN, "POST", f"/deployments/{world.deployment}/activate")
        assert refused.status_code == 403, refused.text
        assert "viewer" in refused.text
        assert call(VIEWER_TOKEN, "POST", "/devices").status_code == 403
        # the operator passes the role check (and gets the pipeline's own answer: not yet)
        acted = call(OPERATOR_TOKEN, "POST", f"/deployments/{world.deployment}/activate")
        assert acted.status_code not in (401, 403), acted.text
