"""Bundle downloads from a live hub with ``deltaport.transfer.download``: a link cut every
64 KiB, a resume from the middle, and the hub process killed and restarted mid-transfer."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from deltaport.transfer import DownloadConfig, download, make_plan, part_path
from deltaport.transfer.config import KiB, MiB
from tests.fixtures.proxy import TcpProxy
from tests.hub.conftest import World, build_world, fake_toolkit, hub_in_thread

CHUNK = 256 * KiB


def config(world: World, device: str, **kw: Any) -> DownloadConfig:
    return DownloadConfig(
        headers={"Authorization": f"Bearer {world.tokens[device]}"},
        backoff_initial=0.05,
        backoff_max=0.5,
        read_timeout=5,
        connect_timeout=2,
        max_duration=90,
        **kw,
    )


@pytest.fixture
def big_world(tmp_path: Path, sqlite_url: str) -> World:
    return build_world(tmp_path / "data", sqlite_url, bundle_size=1 * MiB)


def test_download_through_a_link_cut_every_64k(big_world: World, tmp_path: Path) -> None:
    w = big_world
    source = w.bundle_path("dev-1")
    plan = make_plan(source, CHUNK)
    with hub_in_thread(w.settings(), toolkit=fake_toolkit(w.registry)) as url:
        port = int(url.rsplit(":", 1)[1])
        with TcpProxy(("127.0.0.1", port), cut_after=64 * KiB) as link:
            result = download(
                f"{link.url}/api/v1/device/bundles/{w.bundles['dev-1']}",
                tmp_path / "bundle",
                plan,
                config=config(w, "dev-1"),
                expected_sha256=w.bundles["dev-1"],
            )
    assert (tmp_path / "bundle").read_bytes() == source.read_bytes()
    assert link.cuts >= 15 and result.retries >= 15
    assert result.bytes_fetched <= 1.05 * w.bundle_size  # nothing sent twice beyond headers
    assert link.bytes_down <= 1.05 * w.bundle_size


def test_resume_from_the_middle(big_world: World, tmp_path: Path) -> None:
    w = big_world
    data = w.bundle_path("dev-2").read_bytes()
    dest = tmp_path / "bundle"
    half = len(data) // 2 + 1234  # not on a chunk boundary
    part_path(dest).write_bytes(data[:half])
    with hub_in_thread(w.settings(), toolkit=fake_toolkit(w.registry)) as url:
        result = download(
            f"{url}/api/v1/device/bundles/{w.bundles['dev-2']}",
            dest,
            make_plan(w.bundle_path("dev-2"), CHUNK),
            config=config(w, "dev-2"),
        )
    assert dest.read_bytes() == data
    assert result.bytes_fetched == len(data) - half  # only the missing tail crossed
    assert result.requests == 1


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_hub_restarted_mid_transfer(
    db: str, tmp_path: Path, request: pytest.FixtureRequest, hub_process_factory: Any
) -> None:
    """Kill the hub process (SIGKILL) mid-download, start it again on the same DB and port."""
    if db == "sqlite":
        url = f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        pg = request.getfixturevalue("postgres")
        url = pg.url(pg.new_database())
    w = build_world(tmp_path / "data", url, bundle_size=1 * MiB)
    source = w.bundle_path("dev-1")
    hub = hub_process_factory(w).start()
    seen: list[int] = []
    outcome: dict[str, Any] = {}
    with TcpProxy(("127.0.0.1", hub.port), rate=512 * KiB) as link:

        def fetch() -> None:
            try:
                outcome["result"] = download(
                    f"{link.url}/api/v1/device/bundles/{w.bundles['dev-1']}",
                    tmp_path / "bundle",
                    make_plan(source, CHUNK),
                    config=config(w, "dev-1"),
                    progress=lambda done, total: seen.append(done),
                )
            except Exception as exc:  # reported below
                outcome["error"] = exc

        worker = threading.Thread(target=fetch)
        worker.start()
        deadline = time.monotonic() + 30
        while not seen or seen[-1] < 300 * KiB:
            assert time.monotonic() < deadline and worker.is_alive(), outcome
            time.sleep(0.02)
        hub.stop(signal.SIGKILL)
        link.cut_all()  # what the hub had already pushed into loopback buffers dies with it
        at_kill = seen[-1]
        time.sleep(0.5)  # the agent backs off against a dead hub
        hub.start()
        worker.join(timeout=60)
    assert not worker.is_alive() and "error" not in outcome, outcome
    result = outcome["result"]
    assert (tmp_path / "bundle").read_bytes() == source.read_bytes()
    assert 300 * KiB <= at_kill < w.bundle_size
    assert result.retries >= 1 and result.requests >= 2
    assert result.bytes_fetched <= w.bundle_size + CHUNK  # at most the piece in flight again
