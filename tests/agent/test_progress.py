"""The agent tells the hub how much of a bundle arrived, rate limited (issue 12).

The policy is pure (checked over simulated links for its byte budget); the reporter
is checked as ``deltaport.transfer.download``'s real progress callback, downloading a
bundle from a real hub in a thread (uvicorn, SQLite) and reporting to it, including a
download cut half-way and resumed by a new process.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import pytest
from sqlalchemy import select

from deltaport.agent import Agent, AgentConfig
from deltaport.agent.config import HubSettings
from deltaport.agent.hub import BundleOffer, HubClient
from deltaport.agent.progress import (
    REPORT_COST_BYTES,
    ProgressPolicy,
    ProgressReporter,
    Sent,
    report_due,
)
from deltaport.bundle.keys import generate_keypair
from deltaport.config import Settings
from deltaport.errors import TransferError
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.models import DownloadProgress
from deltaport.fleet.queries import hash_token
from deltaport.hub.client import HubClient as OperatorClient
from deltaport.hub.settings import HubServerSettings, OperatorToken
from deltaport.oci import TransportOptions, copy_image
from deltaport.transfer import DownloadConfig, download, part_path
from deltaport.transfer.plan import make_plan
from tests.fixtures.images import Entry, build_image, default_layers, write_oci_layout
from tests.fixtures.proxy import TcpProxy
from tests.fixtures.services import Registry, free_port, run_registry
from tests.hub.conftest import (
    OPERATOR_TOKEN,
    World,
    build_world,
    fake_toolkit,
    hub_in_thread,
)

POLICY = ProgressPolicy()
OPTS = TransportOptions(insecure=True)
MiB = 1024 * 1024


def simulate(size: int, rate: float, piece: int = 16 * 1024) -> int:
    """Reports the policy makes for a SIZE-byte download at RATE bytes/s, in PIECEs."""
    last: Sent | None = None
    reports = 0
    for done in range(piece, size + piece, piece):
        received = min(done, size)
        now = received / rate
        if report_due(POLICY, last, received, size, now, resumed=False):
            last, reports = Sent(received, now), reports + 1
    return reports


@pytest.mark.parametrize("size", [10_000, 300_000, 5 * MiB, 200 * MiB])
@pytest.mark.parametrize("rate", [1_200, 125_000, 12_500_000], ids=["9k6", "1Mbit", "100Mbit"])
def test_reports_cost_under_half_a_percent(size: int, rate: float) -> None:
    reports = simulate(size, rate)
    assert reports * REPORT_COST_BYTES < 0.005 * size, reports
    if size >= 5 * MiB:
        assert reports >= 5  # the dashboard does learn something
    if size == 200 * MiB and rate == 125_000:  # ~28 min: one per 30 s and per 10 % step
        assert 50 <= reports <= 70, reports


def test_policy_rules() -> None:
    total = 10 * MiB
    assert not report_due(POLICY, None, 0, total, 0.0, resumed=True)
    assert report_due(POLICY, None, 1000, total, 0.0, resumed=True)  # the resumed offset
    assert not report_due(POLICY, None, 1000, total, 0.0, resumed=False)
    assert report_due(POLICY, None, POLICY.min_bytes, total, 0.0, resumed=False)
    last = Sent(2 * MiB, 100.0)
    assert not report_due(POLICY, last, 2 * MiB + 300_000, total, 101.0, resumed=False)
    assert report_due(POLICY, last, 2 * MiB + 300_000, total, 131.0, resumed=False)  # 30 s
    assert report_due(POLICY, last, 3 * MiB + 10, total, 101.0, resumed=False)  # a 10 % step
    assert not report_due(POLICY, last, 2 * MiB + 100, total, 500.0, resumed=False)  # < 256 KiB
    assert report_due(POLICY, Sent(total - POLICY.min_bytes, 0.0), total, total, 1.0,
                      resumed=False)  # complete


# --- against a real hub --------------------------------------------------------------

BUNDLE = 2 * MiB


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[World, str]]:
    world = build_world(tmp_path / "data", f"sqlite:///{tmp_path / 'hub.db'}", BUNDLE)
    with hub_in_thread(world.settings(), toolkit=fake_toolkit(world.registry, BUNDLE)) as url:
        yield world, url


def _stored(world: World | str) -> list[DownloadProgress]:
    engine = init_db(world if isinstance(world, str) else world.db_url)
    try:
        with session_scope(engine) as s:
            rows = list(s.scalars(select(DownloadProgress)))
            s.expunge_all()
            return rows
    finally:
        engine.dispose()


class Recording:
    """A client that keeps the bodies (and sizes) of progress requests sent through it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        self.wire: list[int] = []
        self.http = httpx.Client(event_hooks={"request": [self._request],
                                              "response": [self._response]})

    def _request(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/progress"):
            self.bodies.append(json.loads(request.content))
            head = sum(len(k) + len(v) + 4 for k, v in request.headers.raw)
            self.wire.append(head + len(request.content) + len(request.url.raw_path) + 20)

    def _response(self, response: httpx.Response) -> None:
        if response.request.url.path.endswith("/progress"):
            response.read()
            head = sum(len(k) + len(v) + 4 for k, v in response.headers.raw)
            self.wire[-1] += head + len(response.content) + 20


def test_a_download_reports_its_progress_and_its_resume(
        live: tuple[World, str], tmp_path: Path) -> None:
    world, url = live
    digest = world.bundles["dev-1"]
    path = world.bundle_path("dev-1")
    offer = BundleOffer(digest=digest, url=f"{url}/api/v1/device/bundles/{digest}",
                        size=BUNDLE, image_id=world.v2)
    plan = make_plan(path, 64 * 1024)
    recording = Recording()
    token = world.tokens["dev-1"]
    hub = HubClient(HubSettings(url, token, insecure=True), recording.http)
    config = DownloadConfig(headers=hub.download_headers(offer.url), max_attempts=2,
                            read_size=8 * 1024)
    dest = tmp_path / "payload"

    # the first process: cut after ~1.2 MiB (the stop event, between reads)
    stop = threading.Event()
    sent: dict[str, Sent] = {}
    first = ProgressReporter(hub, offer, 0, False, sent)

    def cut_after(done: int, total: int) -> None:
        first(done, total)
        if done >= 1_200_000:
            stop.set()

    with pytest.raises(TransferError, match="cancelled"):
        download(offer.url, dest, plan, config=config, client=hub.http, stop=stop,
                 progress=cut_after)
    told = [int(str(b["received"])) for b in recording.bodies]
    assert len(told) >= 3 and told == sorted(told) and told[-1] <= 1_200_000, told
    assert all(b["size"] == BUNDLE and "resumed" not in b for b in recording.bodies)
    (row,) = _stored(world)
    assert row.bytes_received == told[-1] and row.rate_bps is not None and row.rate_bps > 0

    # a new process resumes: its first report is the offset found on disk, marked resumed
    recording.bodies.clear()
    on_disk = part_path(dest).stat().st_size  # whole chunks and a partial one's prefix
    second = ProgressReporter(hub, offer, 0, True, {})
    download(offer.url, dest, plan, config=config, client=hub.http, progress=second)
    assert dest.read_bytes() == path.read_bytes()
    resumed = recording.bodies[0]
    assert resumed["resumed"] is True
    assert told[-1] <= on_disk == cast(int, resumed["received"]) < BUNDLE
    last = int(str(recording.bodies[-1]["received"]))
    assert BUNDLE - POLICY.min_bytes < last <= BUNDLE  # then 'present' says the rest
    (row,) = _stored(world)
    assert row.bytes_received == last
    # what one report costs in HTTP bytes (TLS and TCP/IP framing come on top)
    assert max(recording.wire) < REPORT_COST_BYTES - 300, recording.wire
    assert first.reports + second.reports == len(told) + len(recording.bodies)
    hub.close()


def test_an_old_hub_is_not_asked_again(live: tuple[World, str]) -> None:
    world, url = live
    digest = world.bundles["dev-1"]
    offer = BundleOffer(digest=digest, url=url, size=BUNDLE, image_id=world.v2)
    recording = Recording()
    hub = HubClient(HubSettings(url + "/nothing-here", world.tokens["dev-1"], insecure=True),
                    recording.http)
    off: set[str] = set()
    reporter = ProgressReporter(hub, offer, 0, True, {}, disabled=off)
    reporter(1000, BUNDLE)  # 404: no such endpoint
    reporter(BUNDLE, BUNDLE)
    assert len(recording.bodies) == 1 and off == {"hub"}
    hub.close()


def test_a_refusing_hub_does_not_stop_the_download(live: tuple[World, str]) -> None:
    world, url = live
    digest = world.bundles["dev-2"]  # dev-1 reports on dev-2's bundle: 403, logged, no raise
    offer = BundleOffer(digest=digest, url=url, size=BUNDLE, image_id=world.v2)
    hub = HubClient(HubSettings(url, world.tokens["dev-1"], insecure=True))
    reporter = ProgressReporter(hub, offer, 0, True, {})
    reporter(1000, BUNDLE)
    assert reporter.reports == 0 and _stored(world) == []
    hub.close()


# --- the real agent, stopped mid-download and started again ------------------------


@pytest.mark.slow
def test_the_real_agent_reports_and_resumes(registry: Registry, tmp_path: Path) -> None:
    """A real agent downloads a ~1 MB bundle from a real hub through a throttled link,
    is stopped half-way (a new process then resumes: its first report is the offset on
    disk, marked resumed), and the hub ends with the report of the bundle's last bytes."""
    v2_layers = default_layers(1)
    v2_layers[2].append(Entry("app/payload.bin", data=random.Random(7).randbytes(1_000_000)))
    layouts = {}
    for tag, image in (("v1", build_image(0)), ("v2", build_image(1, layers=v2_layers))):
        layout = write_oci_layout(tmp_path / f"layout-{tag}", image, tag="t")
        layouts[tag] = f"oci:{layout}:t"
        copy_image(layouts[tag], registry.ref(f"demo/app:{tag}"), OPTS)
    data = tmp_path / "data"
    keys = generate_keypair(data / "keys")
    generate_keypair(data / "keys", "manifest")
    db_url = f"sqlite:///{data / 'deltaport.db'}"
    settings = HubServerSettings(fleet=Settings(data_dir=data, db_url=db_url),
                                 registry_insecure=True, port=free_port(),
                                 operators=(OperatorToken("ci", hash_token(OPERATOR_TOKEN)),))
    with (
        run_registry(tmp_path / "device-registry") as device_registry,
        hub_in_thread(settings) as url,
        OperatorClient(url, OPERATOR_TOKEN, timeout=120) as hc,
        TcpProxy(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as link,
    ):
        copy_image(layouts["v1"], device_registry.ref("demo/app:v1"), OPTS)
        for tag in ("v1", "v2"):
            hc.register_image(registry.ref(f"demo/app:{tag}"))
        token = hc.add_device("edge-1", local_registry=device_registry.host)["token"]
        config = AgentConfig(device="edge-1", trusted_keys=(keys.public_key_path,),
                             inbox=tmp_path / "inbox", state_dir=tmp_path / "state",
                             registry=f"docker://{device_registry.host}",
                             hub=HubSettings(link.url, token, timeout=30.0, insecure=True))
        recordings = [Recording(), Recording()]
        with Agent(config, http=recordings[0].http) as agent:
            agent.run_once()  # check-in
            plan = hc.deploy(f"services:\n  app:\n    image: {registry.host}/demo/app:v2\n",
                             by="ci", email="ops@example.com", devices=["edge-1"])
            size = int(plan["devices"][0]["bytes"])
            assert size > 800_000, size
            link.set_rate(400_000)  # ~2.5 s for the bundle

            def stop_half_way() -> None:
                deadline = time.monotonic() + 60
                while link.bytes_down < size // 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                agent.stop.set()

            stopper = threading.Thread(target=stop_half_way, daemon=True)
            stopper.start()
            agent.run_once()
            stopper.join(timeout=65)
        first = [int(str(b["received"])) for b in recordings[0].bodies]
        assert first and first == sorted(first) and first[-1] < size, first
        with Agent(config, http=recordings[1].http) as agent:
            for _ in range(5):
                agent.run_once()
                if set(hc.deployment(plan["deployment"])["devices"][0]["images"].values()) \
                        == {"present"}:
                    break
        second = recordings[1].bodies
        assert second[0]["resumed"] is True, second
        assert first[-1] <= int(str(second[0]["received"])) < size, (first, second)
        assert all("resumed" not in b for b in second[1:])
        (row,) = _stored(db_url)
        assert row.bytes_received == cast(int, second[-1]["received"]) > size - POLICY.min_bytes
