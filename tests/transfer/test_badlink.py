"""Downloads over a bad link: the real server behind a cutting, throttling TCP proxy.

Bytes are counted at the proxy, i.e. on the wire (headers included), so these
tests check the promise that matters on a 1 Mbit/s link: nothing is sent twice.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from deltaport.errors import TransferError
from deltaport.transfer import download, part_path
from tests.fixtures.proxy import TcpProxy
from tests.transfer.conftest import CHUNK, FILE_SIZE, NAME, Served, fast_config

ROOT = Path(__file__).resolve().parents[2]


def unused_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def upstream(served: Served) -> tuple[str, int]:
    return ("127.0.0.1", served.server.port)


@pytest.mark.parametrize("cut_mode", ["close", "reset"])
def test_link_cut_every_64k_costs_at_most_5_percent(
    served: Served, tmp_path: Path, cut_mode: str
) -> None:
    dest = tmp_path / "b.bin"
    with TcpProxy(upstream(served), cut_after=64 * 1024, cut_mode=cut_mode) as link:
        result = download(f"{link.url}/{NAME}", dest, served.plan, config=fast_config())
    assert dest.read_bytes() == served.content
    assert link.cuts >= FILE_SIZE // (64 * 1024)  # the link really was cut, many times
    assert result.retries >= link.cuts
    assert result.bytes_fetched == FILE_SIZE  # no body byte twice
    assert link.bytes_down <= 1.05 * FILE_SIZE, link.bytes_down


def test_link_cut_every_64k_without_a_plan(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "b.bin"
    with TcpProxy(upstream(served), cut_after=64 * 1024) as link:
        download(f"{link.url}/{NAME}", dest, None, config=fast_config(),
                 expected_size=FILE_SIZE)
    assert dest.read_bytes() == served.content
    assert link.bytes_down <= 1.05 * FILE_SIZE


def test_an_outage_is_waited_out(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "b.bin"
    with TcpProxy(upstream(served), rate=1_000_000) as link:
        def outage() -> None:
            time.sleep(0.3)
            link.set_outage(True)
            time.sleep(1.0)
            link.set_outage(False)

        thread = threading.Thread(target=outage)
        thread.start()
        result = download(f"{link.url}/{NAME}", dest, served.plan,
                          config=fast_config(backoff_initial=0.05, backoff_max=0.4))
        thread.join()
    assert dest.read_bytes() == served.content
    assert result.retries >= 3  # kept knocking during the outage
    assert result.bytes_fetched == FILE_SIZE
    assert link.bytes_down <= 1.05 * FILE_SIZE


def test_connection_refused_gives_up_at_the_limit(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{unused_port()}/{NAME}"
    with pytest.raises(TransferError, match=r"ConnectError.*4 attempts in a row"):
        download(url, tmp_path / "b.bin", None, config=fast_config(max_attempts=4))


def test_sigkill_mid_download_then_restart_sends_nothing_twice(
    served: Served, tmp_path: Path
) -> None:
    dest = tmp_path / "b.bin"
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(asdict(served.plan)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with TcpProxy(upstream(served), rate=400_000) as link:
        args = [sys.executable, "-m", "tests.transfer.downloader_proc",
                f"{link.url}/{NAME}", str(dest), str(plan_file)]
        first = subprocess.Popen(args, cwd=ROOT, env=env)
        try:
            deadline = time.monotonic() + 20
            part = part_path(dest)
            while not (part.exists() and part.stat().st_size >= FILE_SIZE * 2 // 5):
                assert time.monotonic() < deadline, "the first downloader made no progress"
                assert first.poll() is None, "the first downloader ended early"
                time.sleep(0.01)
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        killed_at = part.stat().st_size
        assert 0 < killed_at < FILE_SIZE
        link.set_rate(None)
        second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=60, check=True)
    report = json.loads(second.stdout)
    assert dest.read_bytes() == served.content
    assert report["bytes_reused"] >= killed_at - CHUNK  # what was on disk was kept
    assert link.bytes_down <= FILE_SIZE + CHUNK + 4096, (link.bytes_down, killed_at)
