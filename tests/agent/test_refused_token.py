"""A hub's refusal is told apart from a hub that is down (issue 11 item 12).

A refused token or any other permanent answer (4xx) is logged as a refusal, not as
"hub unreachable, will retry", and ``deltaport agent run --once`` exits with the
error's exit code: 11 for a refused token, 13 for another refusal, 5 for a hub that
cannot be reached. A pass whose hub calls all succeed still exits 0.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deltaport.agent import Agent
from deltaport.errors import AccessError, HubError, TransferError
from tests.agent.conftest import DEVICE, World, agent_config
from tests.agent.hubdouble import HubDouble
from tests.fixtures.services import Registry

TOKEN = "tok-1"


class FixedStatusServer:
    """A real HTTP server on loopback that answers every request with one status."""

    def __init__(self, status: int) -> None:
        answer = status

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                body = b'{"error": "HubError", "message": "not for you"}'
                self.send_response(answer)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FixedStatusServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def hub() -> Iterator[HubDouble]:
    with HubDouble(tokens={TOKEN: DEVICE}) as server:
        yield server


def _config_file(tmp_path: Path, world: World, registry: str, url: str, token: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'device = "{DEVICE}"\ntrusted_keys = ["{world.trusted_pub}"]\ninbox = "inbox"\n'
        f'state_dir = "state"\nregistry = "docker://{registry}"\n'
        f'[hub]\nurl = "{url}"\ntoken = "{token}"\ninsecure = true\ntimeout = 5\n')
    return path


def _run_once(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deltaport.cli.main", "agent", "run", "--once",
                           "--config", str(config)], capture_output=True, text=True, timeout=120)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_run_once_exits_with_the_access_error_code_when_the_token_is_refused(
        tmp_path: Path, world: World, device_registry: Registry, hub: HubDouble) -> None:
    config = _config_file(tmp_path, world, device_registry.host, hub.url, "not-a-token")
    done = _run_once(config)
    assert done.returncode == AccessError.exit_code == 11, done.stdout + done.stderr
    assert "refused" in done.stderr and "unreachable" not in done.stderr


def test_run_once_exits_zero_when_the_hub_accepts_the_token(
        tmp_path: Path, world: World, device_registry: Registry, hub: HubDouble) -> None:
    done = _run_once(_config_file(tmp_path, world, device_registry.host, hub.url, TOKEN))
    assert done.returncode == 0, done.stdout + done.stderr
    assert hub.checkins  # it did talk to the hub


def test_run_once_exits_with_the_transfer_code_when_the_hub_is_down(
        tmp_path: Path, world: World, device_registry: Registry) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    done = _run_once(_config_file(tmp_path, world, device_registry.host, url, TOKEN))
    assert done.returncode == TransferError.exit_code == 5, done.stdout + done.stderr
    assert "unreachable" in done.stderr


def test_a_permanent_refusal_is_logged_as_one_not_as_unreachable(
        tmp_path: Path, world: World, device_registry: Registry,
        caplog: pytest.LogCaptureFixture) -> None:
    with FixedStatusServer(410) as gone:
        config = agent_config(tmp_path, world, device_registry.host, hub_url=gone.url)
        with caplog.at_level(logging.WARNING, "deltaport.agent"), Agent(config) as agent:
            report = agent.run_once()
    failure = report.hub_failure
    assert isinstance(failure, HubError) and failure.status == 410 and not failure.transient
    assert not isinstance(failure, TransferError)
    messages = [r.getMessage() for r in caplog.records]
    assert not any("unreachable" in m for m in messages), messages
    assert any("refused" in m and "410" in m for m in messages), messages


def test_run_once_exits_with_the_hub_error_code_on_a_permanent_refusal(
        tmp_path: Path, world: World, device_registry: Registry) -> None:
    with FixedStatusServer(410) as gone:
        done = _run_once(_config_file(tmp_path, world, device_registry.host, gone.url, TOKEN))
    assert done.returncode == HubError.exit_code == 13, done.stdout + done.stderr
