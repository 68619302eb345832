"""`deltaport hub token create` and `deltaport hub serve`, run as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.queries import add_device, hash_token
from tests.hub.conftest import ROOT, HubProcess


def deltaport(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deltaport.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=60,
    )


def test_tokens_minted_by_the_cli_open_a_served_hub(
    tmp_path: Path, hub_process_factory: Any
) -> None:
    data = tmp_path / "data"
    db_url = f"sqlite:///{data / 'deltaport.db'}"
    engine = init_db(db_url)
    with session_scope(engine) as session:  # what `deltaport device add` does
        _, device_token = add_device(session, name="dev-9", link_rate_bps=1_000_000)
    engine.dispose()
    minted = deltaport(
        "hub", "token", "create", "--operator", "alice", "--data-dir", str(data), "--json"
    )
    assert minted.returncode == 0, minted.stderr
    doc = json.loads(minted.stdout)
    assert Path(doc["config"]) == data / "hub.toml"
    assert hash_token(doc["token"]) in (data / "hub.toml").read_text()

    world = SimpleNamespace(data_dir=data, db_url=db_url)  # all hub_process_factory needs
    hub: HubProcess = hub_process_factory(world).start()
    ops = {"Authorization": f"Bearer {doc['token']}"}
    r = httpx.get(f"{hub.url}/api/v1/devices/dev-9", headers=ops)
    assert r.status_code == 200 and r.json()["device"] == "dev-9"
    r = httpx.post(
        f"{hub.url}/api/v1/device/checkin",
        json={"inventory": {"images": []}},
        headers={"Authorization": f"Bearer {device_token}"},
    )
    assert r.status_code == 200
    assert (
        httpx.get(
            f"{hub.url}/api/v1/devices/dev-9", headers={"Authorization": f"Bearer {device_token}"}
        ).status_code
        == 401
    )
    hub.stop()
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why
    assert hub.proc is not None and hub.proc.returncode == -signal.SIGTERM
