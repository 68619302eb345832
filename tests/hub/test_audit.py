"""The audit log: operator writes over HTTP are recorded with who, what, target, address, status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from deltaport.errors import FormatError, StateError
from deltaport.fleet import audit
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.models import Event
from deltaport.fleet.queries import hash_token
from deltaport.hub import audit as hub_audit
from deltaport.hub.client import HubClient
from deltaport.hub.settings import OperatorToken
from tests.hub.conftest import (
    OPERATOR_TOKEN,
    REGISTRY,
    ROOT,
    LiveHub,
    World,
    fake_toolkit,
    hub_in_thread,
)

ALICE, BOB = "alice-token-0123456789abcdef0123456789", "bob-token-0123456789abcdef0123456789"
COMPOSE_V3 = f"services:\n  app:\n    image: {REGISTRY}/demo/app:v3\n"


@pytest.fixture
def team_hub(any_world: World) -> Iterator[LiveHub]:
    """A hub (SQLite and PostgreSQL) with operator tokens ops, alice and bob."""
    any_world.registry.add(f"{REGISTRY}/demo/app:v3", ["base", "lib1", "app3"])
    toolkit = fake_toolkit(any_world.registry)
    base = any_world.settings()
    operators = (
        OperatorToken("ops", hash_token(OPERATOR_TOKEN)),
        OperatorToken("alice", hash_token(ALICE)),
        OperatorToken("bob", hash_token(BOB)),
    )
    with hub_in_thread(replace(base, operators=operators), toolkit=toolkit) as url:
        yield LiveHub(url, any_world, toolkit)


def _client(hub: LiveHub, token: str) -> HubClient:
    return HubClient(hub.url, token, timeout=30)


def test_operator_writes_are_audited_with_who_what_and_where(team_hub: LiveHub) -> None:
    with _client(team_hub, ALICE) as alice:
        alice.register_image(f"docker://{REGISTRY}/demo/app:v3")
        deployed = alice.deploy(COMPOSE_V3, by="alice", email="a@example.com", devices=["dev-1"])
        with pytest.raises(StateError):  # its image is not on dev-1 yet: 409, still recorded
            alice.activate(deployed["deployment"])
        alice.deployments()  # reads are not recorded
        alice.image(f"{REGISTRY}/demo/app:v3")
    with _client(team_hub, BOB) as bob:
        bob.add_device("dev-3")
        with pytest.raises(FormatError):  # 422: a malformed body is refused and recorded
            bob._call("POST", "/devices", json={"nam": "dev-4"})
        bob.device("dev-3")
    with team_hub.client("not-a-token") as nobody:  # 401: nobody to name, nothing recorded
        assert nobody.post("/api/v1/devices", json={"name": "dev-5"}).status_code == 401

    with _client(team_hub, OPERATOR_TOKEN) as ops:
        entries = ops.audit()
        only_alice = ops.audit(operator="alice")
        assert ops.audit(limit=1) == entries[:1]
        with pytest.raises(FormatError):
            ops.audit(limit=audit.AUDIT_LIMIT_MAX + 1)
    seen = [(e["operator"], e["action"], e["target"], e["remote"], e["outcome"]) for e in entries]
    dep = deployed["deployment"]
    assert seen == [  # newest first
        ("bob", "device.add", None, "127.0.0.1", 422),
        ("bob", "device.add", "dev-3", "127.0.0.1", 201),
        ("alice", "deployment.activate", dep, "127.0.0.1", 409),
        ("alice", "deployment.create", dep, "127.0.0.1", 200),
        ("alice", "image.register", f"{REGISTRY}/demo/app:v3", "127.0.0.1", 201),
    ]
    assert [e["operator"] for e in only_alice] == ["alice"] * 3
    assert only_alice == entries[2:]
    # each entry is in the event log too
    engine = init_db(team_hub.world.db_url)
    try:
        with session_scope(engine) as s:
            lines = [
                e.detail for e in s.query(Event).filter(Event.kind == "audit").order_by(Event.id)
            ]
    finally:
        engine.dispose()
    assert lines[-1] == "bob device.add from 127.0.0.1: 422"
    assert lines[0] == f"alice image.register {REGISTRY}/demo/app:v3 from 127.0.0.1: 201"
    assert len(lines) == 5

    # `deltaport status audit --json` against the hub prints the same entries
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "deltaport.cli.main",
            "status",
            "audit",
            "--json",
            "--operator",
            "bob",
            "--hub",
            team_hub.url,
            "--token",
            OPERATOR_TOKEN,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == entries[:2]


def test_audited_actions_are_the_documented_words() -> None:
    from typing import get_args

    from deltaport.cli.status import AUDIT_LIMIT_MAX
    from deltaport.hub.schemas import AuditActionWord

    assert set(get_args(AuditActionWord)) == {a.value for a in audit.AuditAction}
    assert set(hub_audit.ROUTE_ACTIONS.values()) <= set(audit.AuditAction)
    assert AUDIT_LIMIT_MAX == audit.AUDIT_LIMIT_MAX


def test_local_cli_writes_are_audited_as_the_os_user(tmp_path: Path) -> None:
    import getpass

    from tests.fleet.test_cli import run

    data = tmp_path / "data"
    run(data, "device", "add", "edge-1")
    run(data, "status", "deployments")  # a read: not recorded
    failed = run(data, "device", "add", "edge-1", ok=False)  # refused: nothing written
    assert failed.returncode != 0
    doc = json.loads(run(data, "status", "audit", "--json").stdout)
    assert [(e["operator"], e["action"], e["target"], e["remote"], e["outcome"]) for e in doc] == [
        (getpass.getuser(), "device.add", "edge-1", "local", 0)
    ]
    table = run(data, "status", "audit").stdout
    assert "device.add" in table and "edge-1" in table and "local" in table


def test_an_entry_is_written_before_the_client_gets_its_answer(
    team_hub: LiveHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that reads the log right after its write finds it (was: a race, written late)."""
    import time

    slow_record = audit.record

    def record_slowly(session: object, entry: audit.AuditRecord) -> None:
        time.sleep(0.5)  # a busy database: the write takes a while
        slow_record(session, entry)  # type: ignore[arg-type]

    monkeypatch.setattr(audit, "record", record_slowly)
    with _client(team_hub, BOB) as bob:
        bob.add_device("dev-7")
        with pytest.raises(FormatError):
            bob._call("POST", "/devices", json={"nam": "dev-8"})
    with _client(team_hub, OPERATOR_TOKEN) as ops:
        seen = [(e["action"], e["target"], e["outcome"]) for e in ops.audit()]
    assert seen == [("device.add", None, 422), ("device.add", "dev-7", 201)]
