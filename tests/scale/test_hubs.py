"""Three hubs on one PostgreSQL behind nginx: any request lands on any hub, and a hub
killed mid-download loses nothing (the agent's downloader resumes on another)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from deltaport.bundle.keys import load_public_key
from deltaport.desired import decode_envelope
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.models import Device, DeviceImage
from deltaport.transfer import DownloadConfig, download, make_plan
from deltaport.transfer.config import KiB, MiB
from tests.fixtures.proxy import TcpProxy
from tests.scale.conftest import HUBS, HubFleet, answered_by

pytestmark = pytest.mark.slow

API = "/api/v1/device"
CHUNK = 256 * KiB
RATE = 4 * MiB  # bytes/s of the device's link: the download takes about four seconds


def present(fleet: HubFleet, device: str) -> dict[str, Any]:
    w = fleet.world
    return {"message_id": str(uuid.uuid4()), "device": device, "image_id": w.v2,
            "status": "present", "deployment": w.deployment, "at": "2026-12-03T09:00:00Z",
            "target": "demo/app:v2", "via": "hub", "bytes": {"bundle": 1, "downloaded": 1}}


def image_status(fleet: HubFleet, device: str, image_id: str) -> str | None:
    engine = init_db(fleet.world.db_url)
    try:
        with session_scope(engine) as s:
            return s.execute(
                select(DeviceImage.status)
                .join(Device, Device.id == DeviceImage.device_id)
                .where(Device.name == device, DeviceImage.image_id == image_id)
            ).scalar_one_or_none()
    finally:
        engine.dispose()


def test_any_request_lands_on_any_hub(hub_fleet: HubFleet) -> None:
    f, w = hub_fleet, hub_fleet.world
    d1, d2 = f.device("dev-1"), f.device("dev-2")
    inventory = {"images": [{"image_id": w.v1, "name": "demo/app:v1"}]}
    checkin = d2.post(API + "/checkin", json={"inventory": inventory})
    assert checkin.status_code == 200, checkin.text
    assert image_status(f, "dev-2", w.v1) == "present"  # landed in the one database
    writers = set()
    for name, client in (("dev-1", d1), ("dev-2", d2)):
        r = client.post(API + "/status", json={"messages": [present(f, name)]})
        assert r.status_code == 200 and len(r.json()["accepted"]) == 1, r.text
        writers.add(answered_by(r))
        assert image_status(f, name, w.v2) == "present"
    # the set completed on whichever hub took the last report; every hub now answers
    # the same signed desired manifest (nothing of it was kept in that hub's memory)
    readers: dict[str, bytes] = {}
    for _ in range(6 * HUBS):
        r = d1.get(API + "/desired-manifest")
        assert r.status_code == 200, r.text
        readers[answered_by(r)] = r.content
        if len(readers) == HUBS:
            break
    assert set(readers) == {h.address for h in f.hubs}, readers.keys()
    assert len(set(readers.values())) == 1
    doc = decode_envelope(next(iter(readers.values())), [load_public_key(w.manifest_public_key)],
                          device="dev-1")
    assert doc.deployment == w.deployment
    assert writers - set(readers) == set() and len(readers) > 1  # read elsewhere than written
    listed = {answered_by(r): r.json() for r in (d2.get(API + "/bundles") for _ in range(HUBS))}
    assert len({str(v) for v in listed.values()}) == 1  # the same offers from every hub


def established_to(port: int) -> int:
    """How many TCP connections to 127.0.0.1:PORT are established right now (/proc/net/tcp)."""
    wanted = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "01":
            count += 1
    return count


def serving_hub(fleet: HubFleet, deadline: float) -> int:
    """The hub nginx is streaming the download from (the one connection nginx holds open)."""
    while time.monotonic() < deadline:
        busy = [h.index for h in fleet.hubs if h.alive and established_to(h.port)]
        if len(busy) == 1:
            return busy[0]
        time.sleep(0.01)
    raise AssertionError("no single hub is serving the download")


def test_a_hub_killed_mid_download_the_agent_resumes_on_another(
    hub_fleet: HubFleet, tmp_path: Path
) -> None:
    f, w = hub_fleet, hub_fleet.world
    source = w.bundle_path("dev-1")
    dest = tmp_path / "bundle"
    seen: list[int] = []
    outcome: dict[str, Any] = {}
    config = DownloadConfig(headers={"Authorization": f"Bearer {w.tokens['dev-1']}"},
                            backoff_initial=0.05, backoff_max=0.5, read_timeout=5,
                            connect_timeout=2, max_duration=60)
    nginx_port = int(f.url.rsplit(":", 1)[1])
    with TcpProxy(("127.0.0.1", nginx_port), rate=RATE) as link:

        def fetch() -> None:
            try:
                outcome["result"] = download(
                    f"{link.url}{API}/bundles/{w.bundles['dev-1']}", dest,
                    make_plan(source, CHUNK), config=config,
                    progress=lambda done, total: seen.append(done),
                    expected_sha256=w.bundles["dev-1"])
            except Exception as exc:  # reported below
                outcome["error"] = exc

        worker = threading.Thread(target=fetch)
        worker.start()
        deadline = time.monotonic() + 30
        while not seen or seen[-1] < 2 * MiB:
            assert time.monotonic() < deadline and worker.is_alive(), outcome
            time.sleep(0.01)
        victim = f.hubs[serving_hub(f, deadline)]
        at_kill = seen[-1]
        victim.kill()
        worker.join(timeout=60)
    assert not worker.is_alive() and "error" not in outcome, outcome
    result = outcome["result"]
    assert dest.read_bytes() == source.read_bytes()  # and download() verified the sha256
    assert at_kill < w.bundle_size
    assert result.retries >= 1 and result.requests >= 2
    assert result.bytes_fetched <= w.bundle_size + 2 * CHUNK  # only the pieces in flight again
    assert not victim.alive and sum(h.alive for h in f.hubs) == HUBS - 1
    # the survivors keep answering through nginx; the dead hub is skipped
    d1 = f.device("dev-1")
    answers = [d1.get(API + "/bundles") for _ in range(2 * HUBS)]
    assert all(r.status_code == 200 for r in answers)
    assert victim.address not in {answered_by(r) for r in answers}
