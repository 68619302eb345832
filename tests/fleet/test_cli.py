"""The fleet commands, run as a user runs them (a real process), on a SQLite data dir."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from deltaport.bundle.keys import load_public_key
from deltaport.desired import DesiredModule, decode_envelope
from deltaport.fleet import queries
from deltaport.fleet.db import init_db, session_scope
from deltaport.pipelines import image_to_device as i2d
from tests.fleet.fakes import FakeRegistry, FakeSigner


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


_REGISTERED: list[bool] = []


def run(data_dir: Path, *args: str, ok: bool = True) -> Result:
    """Run `deltaport --data-dir DATA_DIR ARGS…` in this process, through main() itself
    (so exit codes and error messages are the real ones)."""
    import deltaport.cli.main as cli_main

    if not _REGISTERED:
        cli_main._register_groups()
        _REGISTERED.append(True)
    out, err = io.StringIO(), io.StringIO()
    argv = ["deltaport", "--data-dir", str(data_dir), *args]
    code = 0
    with (
        mock.patch.object(cli_main, "_register_groups", lambda: None),
        mock.patch.object(sys, "argv", argv),
        mock.patch.dict(os.environ, {"COLUMNS": "200"}),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            cli_main.main()
        except SystemExit as exc:
            code = int(exc.code or 0)
    result = Result(code, out.getvalue(), err.getvalue())
    if ok:
        assert code == 0, result.stderr
    return result


def run_process(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `deltaport` entry point in a new process."""
    env = {k: v for k, v in os.environ.items() if k != "DELTAPORT_HOME"}
    return subprocess.run(
        [sys.executable, "-m", "deltaport.cli.main", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir whose database knows two registered images (via the fake registry)."""
    d = tmp_path / "home"
    registry = FakeRegistry()
    registry.add("reg.io/app:1", ["os", "app1"])
    registry.add("reg.io/app:2", ["os", "app2"])
    engine = init_db(f"sqlite:///{d / 'deltaport.db'}")
    with session_scope(engine) as s:
        for name in ("reg.io/app:1", "reg.io/app:2"):
            i2d.register(
                s,
                reference=name,
                name=None,
                reader=registry,
                signer=FakeSigner(),
                signatures_dir=d / "signatures",
            )
    engine.dispose()
    return d


def image_id(data_dir: Path, name: str) -> str:
    engine = init_db(f"sqlite:///{data_dir / 'deltaport.db'}")
    with session_scope(engine) as s:
        value = queries.find_image(s, name).image_id
    engine.dispose()
    return value


def test_device_lifecycle_and_status(data_dir: Path, tmp_path: Path) -> None:
    out = run(
        data_dir,
        "device",
        "add",
        "dev-1",
        "--link-rate",
        "512kbit",
        "--label",
        "site=mine",
        "--json",
    )
    added = json.loads(out.stdout)
    assert added["link_rate_bps"] == 512_000 and len(added["token"]) > 30
    assert added["token"] not in (data_dir / "deltaport.db").read_bytes().decode("latin-1")
    dup = run(data_dir, "device", "add", "dev-1", ok=False)
    assert dup.returncode == 10 and "already exists" in dup.stderr
    inv = tmp_path / "inv.json"
    inv.write_text(
        json.dumps(
            {"images": [{"image_id": image_id(data_dir, "reg.io/app:2"), "name": "reg.io/app:2"}]}
        )
    )
    run(data_dir, "device", "report", "dev-1", str(inv))
    dev = json.loads(run(data_dir, "status", "device", "dev-1", "--json").stdout)
    assert [(i["image"], i["status"]) for i in dev["images"]] == [("reg.io/app:2", "present")]
    table = run(data_dir, "status", "device", "dev-1").stdout
    assert "reg.io/app:2" in table and "present" in table
    img = json.loads(run(data_dir, "status", "image", "reg.io/app:2", "--json").stdout)
    assert img["counts"] == {"present": 1}
    hist = json.loads(
        run(data_dir, "status", "history", "--since", "1h", "--every", "minute", "--json").stdout
    )
    assert sum(b["counts"].get("present", 0) for b in hist) == 1
    # bad input: unknown device, unregistered image, malformed inventory
    assert run(data_dir, "device", "report", "nobody", str(inv), ok=False).returncode == 10
    inv.write_text(json.dumps({"images": [{"image_id": "sha256:" + "a" * 64}]}))
    bad = run(data_dir, "device", "report", "dev-1", str(inv), ok=False)
    assert bad.returncode == 10 and "never registered" in bad.stderr
    inv.write_text("{nope")
    assert run(data_dir, "device", "report", "dev-1", str(inv), ok=False).returncode == 3


def test_activate_and_event_apply(data_dir: Path, tmp_path: Path) -> None:
    """A deployment recorded through the pipeline, then completed by `event apply`."""
    from deltaport.pipelines.manifest import parse_manifest
    from deltaport.storage.folder import FolderStore
    from tests.fleet.fakes import CountingRanker, FakeBuilder

    run(data_dir, "device", "add", "dev-1")
    app1 = image_id(data_dir, "reg.io/app:1")
    inv = tmp_path / "inv.json"
    inv.write_text(json.dumps({"images": [{"image_id": app1}]}))
    run(data_dir, "device", "report", "dev-1", str(inv))
    engine = init_db(f"sqlite:///{data_dir / 'deltaport.db'}")
    req = i2d.DeployRequest(
        parse_manifest(b"services:\n  a:\n    image: reg.io/app:2\n"), "carol", "c@x", ("dev-1",)
    )
    result = i2d.deploy(
        engine,
        req,
        ranker=CountingRanker(),
        builder=FakeBuilder(),
        store=FolderStore(data_dir / "outbox"),
        work_dir=tmp_path / "w",
    )
    engine.dispose()
    dep = result.deployment_id
    early = run(data_dir, "activate", dep, ok=False)
    assert early.returncode == 10 and "dev-1: reg.io/app:2 (in_transit)" in early.stderr
    keys = json.loads(
        run(data_dir, "keys", "generate", str(data_dir / "keys"), "--name", "manifest", "--json")
        .stdout
    )
    assert keys["private_key"] == str(data_dir / "keys" / "manifest.key")
    msg = tmp_path / "msg.json"
    msg.write_text(
        json.dumps(
            {
                "message_id": "m-1",
                "device": "dev-1",
                "image_id": image_id(data_dir, "reg.io/app:2"),
                "status": "present",
                "deployment": dep,
            }
        )
    )
    out = json.loads(run(data_dir, "event", "apply", str(msg), "--json").stdout)
    assert out["completed"] == [dep] and out["activated"] == [dep]
    again = json.loads(run(data_dir, "event", "apply", str(msg), "--json").stdout)
    assert again["results"][0]["outcome"] == "duplicate" and again["completed"] == []
    envelope = (data_dir / "outbox" / "devices" / "dev-1" / "desired.json").read_bytes()
    desired = decode_envelope(
        envelope, [load_public_key(Path(keys["public_key"]))], device="dev-1"
    )
    app2 = image_id(data_dir, "reg.io/app:2")
    assert desired.modules == (DesiredModule("a", "localhost:5000/reg.io/app:2", app2),)
    assert desired.version == 1 and desired.deployment == dep
    again_activated = json.loads(run(data_dir, "activate", dep, "--json").stdout)
    assert again_activated["deployment"] == dep and again_activated["versions"] == {"dev-1": 2}
    listing = json.loads(run(data_dir, "status", "deployments", "--by", "carol", "--json").stdout)
    assert [d["state"] for d in listing] == ["active"]
    assert (
        json.loads(run(data_dir, "status", "deployments", "--by", "nobody", "--json").stdout) == []
    )
    status = json.loads(run(data_dir, "status", "deployment", dep, "--json").stdout)
    assert status["devices"][0]["images"] == {"reg.io/app:2": "present"}
    msg.write_text(
        json.dumps(
            {
                "message_id": "m-2",
                "device": "dev-1",
                "image_id": app1,
                "status": "present",
                "deployment": "d-unknown",
            }
        )
    )
    unknown = run(data_dir, "event", "apply", str(msg), ok=False)
    assert unknown.returncode == 10 and "unknown deployment 'd-unknown'" in unknown.stderr
    assert run(data_dir, "status", "deployment", "d-nope", ok=False).returncode == 10


def test_deploy_bad_manifest_and_missing_options(data_dir: Path, tmp_path: Path) -> None:
    m = tmp_path / "deployment.template.json"
    m.write_text(
        json.dumps(
            {
                "modulesContent": {
                    "$edgeAgent": {
                        "properties.desired": {
                            "modules": {"a": {"settings": {"image": "${REG}/app:2"}}}
                        }
                    }
                }
            }
        )
    )
    r = run(data_dir, "deploy", str(m), "--devices", "x", "--by", "me", "--email", "m@x", ok=False)
    assert r.returncode == 3 and "${REG}" in r.stderr
    r = run(
        data_dir,
        "deploy",
        str(m),
        "--var",
        "REG=reg.io",
        "--devices",
        "x",
        "--by",
        "me",
        "--email",
        "m@x",
        ok=False,
    )
    assert r.returncode == 10 and "unknown devices: x" in r.stderr
    urgent = ["--var", "REG=reg.io", "--devices", "x", "--by", "me", "--email", "m@x"]
    r = run(data_dir, "deploy", str(m), *urgent, "--priority", "2000000", ok=False)
    assert r.returncode == 2 and "priority must be between" in r.stderr
    r = run(data_dir, "deploy", str(m), "--devices", "x", ok=False)
    assert r.returncode == 2 and "--by" in r.stderr


def test_database_gone_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    r = run_process(tmp_path, "--db", f"sqlite:///{blocker}/x/db.sqlite", "status", "deployments")
    assert r.returncode == 9 and "cannot create database folder" in r.stderr
    added = run_process(tmp_path, "device", "add", "edge-7", "--link-rate", "2Mbit")
    assert added.returncode == 0 and "edge-7" in added.stdout
    assert json.loads(run_process(tmp_path, "device", "list", "--json").stdout)[0][
        "link_rate_bps"
    ] == (2_000_000)
