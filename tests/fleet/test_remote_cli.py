"""The fleet commands against a remote hub (``--hub URL --token …``), as a user runs them.

A real ``deltaport hub serve`` process (SQLite, bundle folder, the real registry
reader, signer and delta builder) serves a real Docker Distribution registry's
images. Each command runs at least once as its own ``deltaport`` process with
``--hub/--token`` (or ``DELTAPORT_HUB``/``DELTAPORT_HUB_TOKEN``); the many
comparison runs go through the same ``main()`` in this process (``tests.fleet.test_cli.run``:
a new interpreter costs ~1.5 s). The same commands are run on the local database
path — on the hub's own data dir (same rows: the output must be the same, tables and
``--json``) and on a separate data dir built locally from scratch (same plan).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from deltaport.cli.status import HISTORY_GAPS_MAX, fill_gaps, history_table
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.models import DeploymentSet
from deltaport.oci import TransportOptions, copy_image, open_source
from tests.fixtures.images import build_image, write_oci_layout
from tests.fixtures.services import Registry, free_port
from tests.fleet.test_cli import Result, run
from tests.hub.conftest import ROOT, HubProcess

OPERATOR = "ci"
_HUB_ENV = ("DELTAPORT_HUB", "DELTAPORT_HUB_TOKEN", "DELTAPORT_HOME", "DELTAPORT_DB")


def deltaport(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `deltaport` entry point in a new process (wide terminal, no hub env)."""
    base = {k: v for k, v in os.environ.items() if k not in _HUB_ENV}
    return subprocess.run(
        [sys.executable, "-m", "deltaport.cli.main", *args],
        capture_output=True,
        text=True,
        env={**base, "COLUMNS": "400", "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=ROOT,
        timeout=180,
    )


def flat(text: str) -> str:
    """TEXT with every run of whitespace one space (rich wraps long error lines)."""
    return " ".join(text.split())


def ok(proc: subprocess.CompletedProcess[str] | Result) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr}"
    return proc.stdout


@dataclass
class RemoteFleet:
    """A hub process over DATA_DIR, its operator token, and the registry's two images."""

    hub: HubProcess
    token: str
    registry: Registry
    image_ids: dict[str, str]  # tag → image ID, as the registry's image says

    @property
    def data_dir(self) -> Path:
        return self.hub.data_dir

    def remote(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`deltaport ARGS --hub URL --token TOKEN`, a new process."""
        return deltaport(*args, "--hub", self.hub.url, "--token", self.token)

    def remote_here(self, *args: str) -> Result:
        """The same through main() in this process (the data dir given is not used)."""
        return run(self.data_dir, *args, "--hub", self.hub.url, "--token", self.token, ok=False)

    def local_here(self, *args: str) -> Result:
        """`deltaport --data-dir DATA_DIR ARGS` in this process: the hub's database, directly."""
        return run(self.data_dir, *args, ok=False)

    def ref(self, tag: str) -> str:
        return self.registry.ref(f"demo/app:{tag}")

    def name(self, tag: str) -> str:
        return f"{self.registry.host}/demo/app:{tag}"

    def device_api(self, token: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.hub.url + "/api/v1/device", headers=headers, timeout=30)


@pytest.fixture(scope="module")
def fleet(module_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """v1 and v2 of a real image in a real registry; a hub process with an operator token."""
    tmp = tmp_path_factory.mktemp("remote")
    ids = {}
    for tag, variant in (("v1", 0), ("v2", 1)):
        layout = write_oci_layout(tmp / f"layout-{tag}", build_image(variant), tag="t")
        copy_image(f"oci:{layout}:t", module_registry.ref(f"demo/app:{tag}"), _insecure())
        with open_source(module_registry.ref(f"demo/app:{tag}"), _insecure()) as src:
            ids[tag] = src.image_id()
    data = tmp / "hub-data"
    data.mkdir()
    (data / "hub.toml").write_text("registry_insecure = true\n")
    minted = json.loads(
        ok(
            deltaport(
                "hub", "token", "create", "--operator", OPERATOR, "--data-dir", str(data), "--json"
            )
        )
    )
    ok(deltaport("keys", "generate", str(data / "keys"), "--name", "manifest"))
    hub = HubProcess(data, f"sqlite:///{data / 'deltaport.db'}", free_port(), tmp / "hub.log")
    hub.start()
    try:
        yield RemoteFleet(hub, minted["token"], module_registry, ids)
    finally:
        hub.stop()


def _insecure() -> TransportOptions:
    return TransportOptions(insecure=True)


def _compose(tmp: Path) -> Path:
    path = tmp / "compose.yml"
    path.write_text("services:\n  app:\n    image: ${REG}/demo/app:v2\n")
    return path


def test_register_add_deploy_activate_status_on_a_remote_hub(
    fleet: RemoteFleet, tmp_path: Path
) -> None:
    # image register: the hub reads the registry and records who its token belongs to
    for tag in ("v1", "v2"):
        doc = json.loads(ok(fleet.remote("image", "register", fleet.ref(tag), "--json")))
        assert doc["image"] == fleet.name(tag) and doc["image_id"] == fleet.image_ids[tag]
        assert doc["layers"] == 3 and Path(doc["signature"]).is_file()

    # device add: by flags (JSON), and by the environment variables (table)
    added = json.loads(
        ok(
            fleet.remote(
                "device", "add", "edge-1", "--link-rate", "512kbit", "--label", "site=n", "--json"
            )
        )
    )
    assert added["device"] == "edge-1" and added["link_rate_bps"] == 512_000
    assert added["labels"] == {"site": "n"}
    env = {"DELTAPORT_HUB": fleet.hub.url, "DELTAPORT_HUB_TOKEN": fleet.token}
    table = ok(deltaport("device", "add", "edge-2", "--label", "site=n", env=env))
    assert table.startswith("device edge-2 added")
    tokens = {"edge-1": added["token"], "edge-2": table.strip().splitlines()[-1]}
    dup = fleet.remote_here("device", "add", "edge-1")
    assert dup.returncode == 10 and "already exists" in flat(dup.stderr)  # 409 → StateError

    # the devices check in (edge-1 has v1); deploy by label, with a ${VAR} from --var
    for name, have in (("edge-1", ["v1"]), ("edge-2", [])):
        inv = {"images": [{"image_id": fleet.image_ids[t], "name": f"demo/app:{t}"} for t in have]}
        with fleet.device_api(tokens[name]) as dev:
            assert dev.post("/checkin", json={"inventory": inv}).status_code == 200
    deploy_args = [
        "deploy",
        str(_compose(tmp_path)),
        "--label",
        "site=n",
        "--var",
        f"REG={fleet.registry.host}",
        "--by",
        "alice",
        "--email",
        "alice@example.com",
        "--priority=-2",
        "--unsigned",  # the remote and the local hub have no key (each its own otherwise)
    ]
    plan = json.loads(ok(fleet.remote(*deploy_args, "--json")))
    deployment = plan["deployment"]
    assert plan["priority"] == -2
    rows = {r["device"]: r for r in plan["devices"]}
    assert plan["state"] == "pending" and sorted(rows) == ["edge-1", "edge-2"]
    assert all(r["sending"] == [fleet.name("v2")] and r["bytes"] > 0 for r in rows.values())
    assert rows["edge-1"]["bytes"] < rows["edge-2"]["bytes"]  # edge-1 has v1 as a source
    assert len(plan["built"]) == 2 and plan["reused"] == []
    stored = (fleet.data_dir / "outbox" / "bundles").iterdir()
    # the hub built and stored them
    assert sorted(r["bytes"] for r in rows.values()) == sorted(p.stat().st_size for p in stored)
    _same_plan_locally(fleet, tmp_path, deploy_args, plan)

    # not everything has arrived: activate fails the same way both ways
    remote_fail = fleet.remote_here("activate", deployment)
    local_fail = fleet.local_here("activate", deployment)
    assert remote_fail.returncode == local_fail.returncode == 10
    why = flat(local_fail.stderr.split("error: ", 1)[1])
    assert "cannot be activated" in why and "edge-2: " in why and why in flat(remote_fail.stderr)

    # both devices report v2 present: the hub completes and activates the set
    for name in ("edge-1", "edge-2"):
        msg = {
            "message_id": str(uuid.uuid4()),
            "device": name,
            "image_id": fleet.image_ids["v2"],
            "status": "present",
            "deployment": deployment,
        }
        with fleet.device_api(tokens[name]) as dev:
            assert dev.post("/status", json={"messages": [msg]}).status_code == 200
    activated = json.loads(ok(fleet.remote("activate", deployment, "--json")))
    assert activated["deployment"] == deployment
    assert sorted(activated["desired"]) == ["edge-1", "edge-2"]
    assert activated["versions"] == {"edge-1": 2, "edge-2": 2}  # v1: the event handler's
    again = json.loads(ok(fleet.local_here("activate", deployment, "--json")))
    assert again["desired"] == activated["desired"]
    assert again["versions"] == {"edge-1": 3, "edge-2": 3}  # each activation: a new version
    table = ok(fleet.remote_here("activate", deployment))
    assert f"deployment {deployment} activated" in table
    assert table.replace("│ 4 ", "│ 5 ") == ok(fleet.local_here("activate", deployment))

    # edge-1 reports it activated v5 and what it runs: the status shows both sides
    with fleet.device_api(tokens["edge-1"]) as dev:
        active = {
            "message_id": str(uuid.uuid4()), "kind": "activation", "device": "edge-1",
            "deployment": deployment, "version": 5, "outcome": "active",
        }
        assert dev.post("/status", json={"messages": [active]}).json()["rejected"] == []
        report = {
            "deployment": {"id": deployment, "version": 5},
            "last_attempt": {"id": deployment, "version": 5, "outcome": "active", "reason": ""},
            "modules": [{
                "module": "app", "desired_image_id": fleet.image_ids["v2"],
                "running_image_id": fleet.image_ids["v2"], "runtime_status": "running",
                "health": None, "exit_code": None, "restart_count": 0,
                "started_at": "2026-12-02T10:00:00Z", "exited_at": None,
                "status_description": "running",
            }],
        }
        assert dev.post("/runtime", json={"report": report}).json()["ok"] is True

    # every status query prints the same, table and JSON, remote or local; each runs
    # once as its own process against the hub
    out = {}
    for what, query in (
        ("deployment", ["status", "deployment", deployment]),
        ("device", ["status", "device", "edge-1"]),
        ("image", ["status", "image", fleet.name("v1")]),
        ("deployments", ["status", "deployments", "--by", "alice"]),
        ("history", ["status", "history", "--since", "1h", "--every", "minute"]),
    ):
        out[what, True] = ok(fleet.remote(*query, "--json"))
        assert json.loads(out[what, True]) == json.loads(ok(fleet.local_here(*query, "--json")))
        out[what, False] = ok(fleet.remote_here(*query))
        assert out[what, False] == ok(fleet.local_here(*query)), query
    img = json.loads(out["image", True])
    assert img["registered_by"] == OPERATOR and img["image_id"] == fleet.image_ids["v1"]
    assert img["devices"] == [{"device": "edge-1", "status": "present"}]
    dep = json.loads(out["deployment", True])
    assert dep["state"] == "active" and dep["counts"] == {"present": 2}
    assert dep["priority"] == -2 and "priority -2" in out["deployment", False]
    assert json.loads(out["deployments", True])[0]["id"] == deployment
    assert json.loads(out["deployments", True])[0]["priority"] == -2
    totals: dict[str, int] = {}
    for bucket in json.loads(out["history", True]):
        for status, n in bucket["counts"].items():
            totals[status] = totals.get(status, 0) + n
    assert totals == {"present": 3, "in_transit": 2}  # edge-1's v1 check-in, 2 sent, 2 arrived
    chart = out["history", False]
    assert "status changes per minute" in chart and "in_transit" in chart and "█" in chart
    assert "edge-1" in out["device", False] and deployment in out["deployments", False]
    device = json.loads(out["device", True])
    assert device["runtime"]["running"] == {"id": deployment, "version": 5}
    assert device["runtime"]["desired"]["version"] == 5
    [app] = device["runtime"]["modules"]
    assert app["matches"] and app["runtime_status"] == "running"
    assert "desired vs running" in out["device", False]
    states = {r["device"]: r["activation"]["state"] for r in dep["devices"]}
    assert states == {"edge-1": "active", "edge-2": "delivered"}
    table = flat(out["deployment", False])
    assert "activation" in table and "active" in table and "delivered" in table
    assert "running: " + deployment + " v5" in out["device", False]


def _same_plan_locally(
    fleet: RemoteFleet, tmp_path: Path, deploy_args: list[str], plan: dict[str, Any]
) -> None:
    """The same fleet built with local commands in its own data dir plans the same deploy."""
    home = tmp_path / "local-home"
    for tag in ("v1", "v2"):
        doc = json.loads(ok(run(home, "image", "register", fleet.ref(tag), "--insecure", "--json")))
        assert doc["image_id"] == fleet.image_ids[tag]
    ok(run(home, "device", "add", "edge-1", "--link-rate", "512kbit", "--label", "site=n"))
    ok(run(home, "device", "add", "edge-2", "--label", "site=n"))
    inv = tmp_path / "inv.json"
    inv.write_text(
        json.dumps({"images": [{"image_id": fleet.image_ids["v1"], "name": "demo/app:v1"}]})
    )
    ok(run(home, "device", "report", "edge-1", str(inv)))
    local = json.loads(ok(run(home, *deploy_args, "--insecure", "--json")))
    assert local.keys() == plan.keys()
    # the local writes are in the audit log, as the OS user from "local"; the report is not
    audited = json.loads(ok(run(home, "status", "audit", "--json")))
    assert [(e["action"], e["remote"], e["outcome"]) for e in reversed(audited)] == [
        ("image.register", "local", 0), ("image.register", "local", 0),
        ("device.add", "local", 0), ("device.add", "local", 0),
        ("deployment.create", "local", 0),
    ]
    assert audited[0]["target"] == local["deployment"] and audited[-2]["target"] == doc["image"]
    engine = init_db(f"sqlite:///{home / 'deltaport.db'}")  # --priority is stored on the set
    try:
        with session_scope(engine) as s:
            stored = s.get(DeploymentSet, local["deployment"])
            assert stored is not None and stored.priority == plan["priority"]
    finally:
        engine.dispose()
    # the same plan, byte counts apart: each bundle carries its deployment's random id,
    # which compresses a byte better or worse (seen: 11,699 against 11,700 bytes)
    assert _plan_shape(local) == _plan_shape(plan)
    for mine, theirs in zip(local["devices"], plan["devices"], strict=True):
        assert abs(mine["bytes"] - theirs["bytes"]) <= BUNDLE_ID_SLACK_BYTES * len(mine["bundles"])


BUNDLE_ID_SLACK_BYTES = 64


def _plan_shape(plan: dict[str, Any]) -> dict[str, Any]:
    """A deploy answer without its deployment id and the byte counts that id moves."""
    devices = [{k: v for k, v in d.items() if k not in ("bytes", "eta_seconds")}
               for d in plan["devices"]]
    return {**{k: v for k, v in plan.items() if k != "deployment"}, "devices": devices}


def test_unknown_objects_are_404_and_fail_like_local(fleet: RemoteFleet) -> None:
    ops = {"Authorization": f"Bearer {fleet.token}"}
    for what, args, path in (
        ("unknown device 'ghost'", ["status", "device", "ghost"], "/devices/ghost"),
        ("unknown deployment 'd-nope'", ["status", "deployment", "d-nope"], "/deployments/d-nope"),
        ("'nope/app:1' is not registered", ["status", "image", "nope/app:1"], "/images/nope/app:1"),
    ):
        answer = httpx.get(f"{fleet.hub.url}/api/v1{path}", headers=ops, timeout=30)
        assert answer.status_code == 404 and answer.json()["error"] == "UnknownObjectError"
        remote, local = fleet.remote_here(*args), fleet.local_here(*args)
        assert remote.returncode == local.returncode == 10, remote.stderr
        assert what in flat(remote.stderr) and what in flat(local.stderr)
    unknown = httpx.post(
        f"{fleet.hub.url}/api/v1/deployments/d-nope/activate", headers=ops, timeout=30
    )
    assert unknown.status_code == 404 and unknown.json()["error"] == "UnknownObjectError"
    process = fleet.remote("status", "device", "ghost")  # the real entry point's exit code
    assert process.returncode == 10 and "unknown device 'ghost'" in process.stderr


def test_usage_errors_before_anything_is_sent(fleet: RemoteFleet, tmp_path: Path) -> None:
    home = tmp_path / "unused"
    no_token = run(home, "status", "deployments", "--hub", fleet.hub.url, ok=False)
    assert no_token.returncode == 2 and "--hub needs --token" in flat(no_token.stderr)
    insecure = fleet.remote_here("image", "register", fleet.ref("v1"), "--insecure")
    assert insecure.returncode == 2 and "registry_insecure" in flat(insecure.stderr)
    deploy = fleet.remote_here(
        "deploy",
        str(_compose(tmp_path)),
        "--devices",
        "edge-1",
        "--by",
        "a",
        "--email",
        "a@b",
        "--insecure",
    )
    assert deploy.returncode == 2 and "registry_insecure" in flat(deploy.stderr)
    wrong = run(home, "status", "deployments", "--hub", fleet.hub.url, "--token", "x", ok=False)
    assert wrong.returncode == 11 and "unknown operator token" in flat(wrong.stderr)  # 401
    missing_var = fleet.remote_here(
        "deploy", str(_compose(tmp_path)), "--devices", "edge-1", "--by", "a", "--email", "a@b"
    )
    assert missing_var.returncode == 3 and "${REG}" in flat(missing_var.stderr)  # checked here
    nobody = f"http://127.0.0.1:{free_port()}"
    down = run(home, "status", "deployments", "--hub", nobody, "--token", "t", ok=False)
    assert down.returncode == 5  # TransferError: nothing listens there
    assert not home.exists()  # no local database was opened for any of these


# --- the `status history` chart, on its own ---------------------------------------------


def _bucket(at: datetime, **counts: int) -> dict[str, Any]:
    return {"start": at.isoformat(), "counts": counts}


def test_history_fills_empty_buckets_between_events() -> None:
    t0 = datetime(2026, 1, 2, 10, tzinfo=UTC)
    filled = fill_gaps([_bucket(t0, present=1), _bucket(t0 + timedelta(hours=3), failed=2)], 3600)
    assert [b["start"] for b in filled] == [(t0 + timedelta(hours=h)).isoformat() for h in range(4)]
    assert [b["counts"] for b in filled] == [{"present": 1}, {}, {}, {"failed": 2}]
    far = [_bucket(t0), _bucket(t0 + timedelta(minutes=HISTORY_GAPS_MAX))]
    assert len(fill_gaps(far, 60)) == 2  # too many rows: only the buckets with events


def test_history_table_draws_one_stacked_bar_per_bucket() -> None:
    t0 = datetime(2026, 1, 2, 10, tzinfo=UTC)
    buckets = [
        _bucket(t0, present=4, in_transit=4),
        _bucket(t0 + timedelta(hours=2), failed=1, weird=1),
    ]
    console = Console(width=200, record=True, color_system=None)
    console.print(history_table(buckets, "hour"))
    text = console.export_text()
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if "2026-01-02" in line}
    assert list(lines) == ["2026-01-02 10:00 UTC", "2026-01-02 11:00 UTC", "2026-01-02 12:00 UTC"]
    header = next(line for line in text.splitlines() if "present" in line and "from" in line)
    assert re.findall(r"\w+", header) == [
        "from",
        "present",
        "in_transit",
        "failed",
        "weird",
        "total",
    ]
    busiest = lines["2026-01-02 10:00 UTC"]
    assert busiest.count("█") == 20 and busiest.count("▒") == 20  # 40 wide, half each
    assert "█" not in lines["2026-01-02 11:00 UTC"] and " 0 " in lines["2026-01-02 11:00 UTC"]
    quiet = lines["2026-01-02 12:00 UTC"]
    assert quiet.count("x") == 5 and quiet.count("?") == 5  # 1 of 8 → 5 of 40 characters
    assert "bar: █ present" in text


def test_history_table_with_no_changes() -> None:
    console = Console(width=120, record=True, color_system=None)
    console.print(history_table([], "day"))
    assert "(no status changes)" in console.export_text()
