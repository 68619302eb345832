"""The agent talks to its hub over verified https only (issue 11, item 3).

Refused: a plain http:// hub unless ``insecure = true`` (then warned at every start);
a hub at an https URL that answers in plain HTTP or shows a certificate its CA did
not sign (the spoofed hub: no byte of the token leaves the device); an offer whose
URL points anywhere but the hub's origin or a configured bundle origin (a service on
the device, such as its registry), for that offer only.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from deltaport.agent import Agent, HubSettings
from deltaport.agent.hub import offer_refusal
from deltaport.errors import UsageError
from tests.agent.conftest import DEVICE, World, agent_config
from tests.agent.hubdouble import HubDouble
from tests.fixtures.services import Registry
from tests.fixtures.tls import TlsFiles, write_starter_tls

TOKEN = "tok-1"
RECORD_MAX = 1 << 20  # bytes a recording server keeps


class RecordingServer:
    """A TCP server on loopback that records every byte it is sent and answers in plain HTTP."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn, contextlib.suppress(OSError):
                conn.settimeout(1.0)
                data = conn.recv(65536)
                self.received += data[: RECORD_MAX - len(self.received)]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 14\r\nConnection: close\r\n\r\n{\"bundles\":[]}")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return write_starter_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A certificate for the same names, from a CA the device does not trust."""
    return write_starter_tls(tmp_path_factory.mktemp("other-tls"))


@pytest.fixture
def https_hub(tls: TlsFiles) -> Iterator[HubDouble]:
    with HubDouble(tokens={TOKEN: DEVICE}, tls=tls.server_context()) as server:
        yield server


def _config_file(tmp_path: Path, world: World, registry: str, hub_table: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'device = "{DEVICE}"\ntrusted_keys = ["{world.trusted_pub}"]\ninbox = "inbox"\n'
        f'state_dir = "state"\nregistry = "docker://{registry}"\n[hub]\n{hub_table}')
    return path


def _agent_run_once(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deltaport.cli.main", "agent", "run", "--once",
                           "--config", str(config)], capture_output=True, text=True, timeout=120)


def test_a_plain_http_hub_without_insecure_is_refused_at_start(
        tmp_path: Path, world: World, device_registry: Registry) -> None:
    with HubDouble(tokens={TOKEN: DEVICE}) as hub:
        config = _config_file(tmp_path, world, device_registry.host,
                              f'url = "{hub.url}"\ntoken = "{TOKEN}"\n')
        done = _agent_run_once(config)
        assert done.returncode == 2, done.stdout + done.stderr  # UsageError
        assert "plain HTTP" in done.stderr and "hub.insecure = true" in done.stderr
        assert hub.requests == [] and hub.checkins == []  # it never even connected
    with pytest.raises(UsageError, match="plain HTTP"):
        HubSettings("http://127.0.0.1:8080", TOKEN)
    with pytest.raises(UsageError, match=r"bundle_origins .* plain HTTP"):
        HubSettings("https://hub", TOKEN, bundle_origins=("http://cdn.example",))


def test_an_insecure_http_hub_works_and_is_warned_about_at_every_start(
        tmp_path: Path, world: World, device_registry: Registry,
        caplog: pytest.LogCaptureFixture) -> None:
    with HubDouble(tokens={TOKEN: DEVICE}) as hub:
        hub.add_bundle(DEVICE, world.small.path, image_id=world.small.image_id,
                       target=world.small.target, deployment="dep-1")
        config = agent_config(tmp_path, world, device_registry.host,
                              hub=HubSettings(hub.url, TOKEN, timeout=5.0, insecure=True))
        with caplog.at_level(logging.WARNING, logger="deltaport.agent"):
            for _ in range(2):
                with Agent(config) as agent:
                    report = agent.run_once()
        assert report.hub_error is None
        assert [s["status"] for s in hub.statuses(world.small.image_id)] == ["present"]
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "hub.insecure = true" in r.getMessage()]
    assert len(warnings) == 2 and "plain HTTP" in warnings[0]


def test_an_https_hub_verified_by_its_ca_file_completes_a_pass(
        tmp_path: Path, world: World, device_registry: Registry, https_hub: HubDouble,
        tls: TlsFiles) -> None:
    https_hub.add_bundle(DEVICE, world.small.path, image_id=world.small.image_id,
                         target=world.small.target, deployment="dep-1")
    config = agent_config(tmp_path, world, device_registry.host,
                          hub=HubSettings(https_hub.url, TOKEN, timeout=5.0, ca_file=tls.ca))
    with Agent(config) as agent:
        report = agent.run_once()
    assert report.hub_error is None and report.reconstructed == 1
    assert https_hub.checkins and [s["status"] for s in
                                   https_hub.statuses(world.small.image_id)] == ["present"]


def test_a_hub_answering_plain_http_at_an_https_url_gets_no_token(
        tmp_path: Path, world: World, device_registry: Registry, tls: TlsFiles) -> None:
    with RecordingServer() as spoof:
        config = agent_config(tmp_path, world, device_registry.host, hub=HubSettings(
            f"https://127.0.0.1:{spoof.port}", TOKEN, timeout=5.0, ca_file=tls.ca))
        with Agent(config) as agent:
            report = agent.run_once()
    assert spoof.connections >= 1  # it was reached ...
    assert TOKEN.encode() not in spoof.received and b"Bearer" not in spoof.received
    assert spoof.received.startswith(b"\x16\x03")  # ... and only saw a TLS ClientHello
    assert report.hub_error is not None and "TLS handshake failed" in report.hub_error
    assert report.downloaded == 0


def test_a_hub_with_a_certificate_from_another_ca_gets_no_token(
        tmp_path: Path, world: World, device_registry: Registry, tls: TlsFiles,
        other_tls: TlsFiles) -> None:
    with HubDouble(tokens={TOKEN: DEVICE}, tls=other_tls.server_context()) as spoof:
        spoof.add_bundle(DEVICE, world.small.path, image_id=world.small.image_id,
                         target=world.small.target, deployment="dep-1")
        config = agent_config(tmp_path, world, device_registry.host,
                              hub=HubSettings(spoof.url, TOKEN, timeout=5.0, ca_file=tls.ca))
        with Agent(config) as agent:
            report = agent.run_once()
        assert spoof.requests == [] and spoof.checkins == []  # no request got through
    assert report.hub_error is not None and "certificate is not trusted" in report.hub_error
    assert report.downloaded == 0 and report.reconstructed == 0


def test_an_offer_pointing_at_a_device_service_is_refused_and_the_others_go_on(
        tmp_path: Path, world: World, device_registry: Registry, https_hub: HubDouble,
        tls: TlsFiles) -> None:
    with RecordingServer() as device_service:
        evil = (f"http://127.0.0.1:{device_service.port}/v2/demo/app/manifests/v1"
                "?_state=delete")
        https_hub.add_bundle(DEVICE, world.big.path, image_id=world.big.image_id,
                             target=world.big.target, deployment="dep-3", url=evil)
        https_hub.add_bundle(DEVICE, world.small.path, image_id=world.small.image_id,
                             target=world.small.target, deployment="dep-1", priority=1)
        config = agent_config(tmp_path, world, device_registry.host, hub=HubSettings(
            https_hub.url, TOKEN, timeout=5.0, ca_file=tls.ca))
        with Agent(config) as agent:
            first = agent.run_once()
            second = agent.run_once()  # permanent: not tried again
    assert device_service.connections == 0 and device_service.received == b""
    assert (first.failed, first.reconstructed) == (1, 1)
    assert (second.failed, second.reconstructed) == (0, 0)
    refused = https_hub.statuses(world.big.image_id)
    assert [s["status"] for s in refused] == ["failed"]
    assert "not on the hub's origin nor on a configured bundle origin" in refused[0]["reason"]
    assert [s["status"] for s in https_hub.statuses(world.small.image_id)] == ["present"]


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://hub.example:8443/api/v1/device/bundles/x", True),
    ("https://HUB.example:8443/b", True),
    ("https://cdn.example/bundles/x", True),  # a configured bundle origin, default port
    ("https://cdn.example:443/bundles/x", True),
    ("http://cdn.example/bundles/x", False),  # same host, other scheme
    ("https://hub.example:9999/b", False),
    ("https://hub.example/b", False),  # port 443, not 8443
    ("http://127.0.0.1:5000/v2/", False),  # the device registry
    ("https://hub.example:8443@127.0.0.1:5000/v2/", False),  # user info
    ("file:///etc/shadow", False),
    ("https://hub.example:99999/b", False),  # no such port
])
def test_offer_origins(url: str, allowed: bool) -> None:
    refusal = offer_refusal(url, "https://hub.example:8443", ("https://cdn.example",))
    assert (refusal is None) is allowed, refusal
