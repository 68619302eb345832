"""The agent tells the hub how much of a bundle arrived, rate limited (issue 12).

The policy is pure (checked over simulated links for its byte budget); the reporter
is checked as ``deltaport.transfer.download``'s real progress callback, downloading a
bundle from a real hub in a thread (uvicorn, SQLite) and reporting to it, including a
download cut half-way and resumed by a new process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from deltaport.agent.config import HubSettings
from deltaport.agent.hub import BundleOffer, HubClient
from deltaport.agent.progress import (
    REPORT_COST_BYTES,
    ProgressPolicy,
    ProgressReporter,
    Sent,
    report_due,
)
from deltaport.errors import TransferError
from deltaport.fleet.db import init_db, session_scope
from deltaport.fleet.models import DownloadProgress
from deltaport.transfer import DownloadConfig, download
from deltaport.transfer.plan import make_plan
from tests.hub.conftest import World, build_world, fake_toolkit, hub_in_thread

POLICY = ProgressPolicy()
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


def _stored(world: World) -> list[DownloadProgress]:
    engine = init_db(world.db_url)
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
    second = ProgressReporter(hub, offer, 0, True, {})
    download(offer.url, dest, plan, config=config, client=hub.http, progress=second)
    assert dest.read_bytes() == path.read_bytes()
    resumed = recording.bodies[0]
    assert resumed["resumed"] is True
    assert told[-1] <= int(str(resumed["received"])) < BUNDLE
    assert int(str(resumed["received"])) % (64 * 1024) == 0  # whole verified chunks
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
