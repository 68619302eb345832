"""A maintenance window honoured end to end: the hub signs a device's window (its
``maintenance-window`` label) into the desired manifest; a real agent keeps the manifest
while the window is closed and activates it once the window opens, with the hub gone.

The wall clock is the agent's ``deltaport.desired.window.utc_now``, set by the test.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deltaport.agent import Agent, AgentConfig, HubSettings
from deltaport.agent.runtime.model import RuntimeKind, RuntimeSettings
from deltaport.bundle import generate_keypair, load_private_key
from deltaport.desired import DesiredModule, DesiredState, ManifestKind, encode_envelope, window
from deltaport.desired.window import WINDOW_FIELD, WINDOW_LABEL
from deltaport.fleet.db import session_scope
from deltaport.fleet.models import Device
from deltaport.pipelines.manifest_to_device import activate
from tests.agent.hubdouble import HubDouble
from tests.fixtures.services import Registry
from tests.fleet.test_pipelines import Fleet

WINDOW = "Sat 02:00-04:00 UTC"


def test_the_hub_signs_the_device_window_into_its_desired_manifest(fleet: Fleet) -> None:
    dep = fleet.deploy(("d",), activate_when_complete=False).deployment_id  # d has it all
    with session_scope(fleet.engine) as s:
        device = s.query(Device).filter_by(name="d").one()
        device.labels = {**device.labels, WINDOW_LABEL: "sat 2:00-04:00 UTC"}
    with session_scope(fleet.engine) as s:
        activate(s, set_id=dep, store=fleet.store, manifest_key=fleet.manifest_key)
    assert fleet.desired("d").manifest[WINDOW_FIELD] == WINDOW  # signed, in canonical form


def test_an_offline_agent_activates_when_its_window_opens(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = generate_keypair(tmp_path / "manifest-keys")
    ref = f"{registry.host}/demo/app:v2"
    state = DesiredState(
        device="dev-1", version=1, deployment="d-1", issued_at="2026-12-03T00:00:00Z",
        kind=ManifestKind.COMPOSE, modules=(DesiredModule("app", ref, "sha256:" + "1" * 64),),
        manifest={"services": {"app": {"image": ref}}, WINDOW_FIELD: WINDOW})
    now = [datetime(2026, 12, 3, 12, tzinfo=UTC)]  # a Thursday: closed
    monkeypatch.setattr(window, "utc_now", lambda: now[0])
    desired = tmp_path / "desired.json"
    with HubDouble(tokens={"tok-1": "dev-1"}) as hub:
        hub.desired["dev-1"] = encode_envelope(state, [load_private_key(keys.private_key_path)])
        config = AgentConfig(
            device="dev-1", trusted_keys=(keys.public_key_path,), inbox=tmp_path / "inbox",
            state_dir=tmp_path / "state", registry=f"docker://{registry.host}",
            runtime=RuntimeSettings(kind=RuntimeKind.FILE, manifest_keys=(keys.public_key_path,),
                                    desired_file=desired),
            hub=HubSettings(f"http://127.0.0.1:{hub.port}", "tok-1", timeout=5.0,
                            insecure=True))
        with Agent(config) as agent:
            report = agent.run_once()
        assert report.runtime and "waits for its maintenance window" in report.runtime, report
        assert "opens 2026-12-05 02:00 UTC" in report.runtime
        assert not desired.exists()
    now[0] = datetime(2026, 12, 5, 2, 30, tzinfo=UTC)  # Saturday 02:30: open; no hub now
    with Agent(config) as agent:
        report = agent.run_once()
    assert report.runtime and "activate" in report.runtime, report
    written = json.loads(desired.read_text())
    assert written["deployment"] == "d-1" and written["manifest"][WINDOW_FIELD] == WINDOW


def test_device_label_sets_a_checked_window(tmp_path: Path) -> None:
    import subprocess
    import sys

    db = f"sqlite:///{tmp_path / 'fleet.db'}"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "deltaport.cli.main", "--db", db, *args],
                              capture_output=True, text=True, timeout=60)

    assert cli("device", "add", "edge-7", "--label", "site=north").returncode == 0
    bad = cli("device", "label", "edge-7", f"{WINDOW_LABEL}=Mon-Fri 02:00 Europe/Berlin")
    assert bad.returncode != 0 and "expected DAYS HH:MM-HH:MM ZONE" in bad.stderr + bad.stdout
    done = cli("device", "label", "edge-7", f"{WINDOW_LABEL}=mon-fri 2:00-04:00 Europe/Berlin",
               "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["labels"] == {
        "site": "north", WINDOW_LABEL: "Mon-Fri 02:00-04:00 Europe/Berlin"}
    removed = cli("device", "label", "edge-7", "--remove", WINDOW_LABEL, "--json")
    assert json.loads(removed.stdout)["labels"] == {"site": "north"}
