"""The hub serves https from what `deltaport hub init --self-signed` wrote (issue 11, item 3).

``hub init`` writes a starter hub.toml, a CA certificate, the hub's certificate and
its 0600 key, and refuses to overwrite any of them. ``hub serve`` (a real subprocess)
then serves https; the operator's client and a real agent verify it against the CA
file and a deployment arrives. A hub on a non-loopback address without TLS refuses
to start unless ``insecure = true``; a key that does not match its certificate is a
clear error at start.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from deltaport.agent import Agent, AgentConfig, HubSettings
from deltaport.config import Settings
from deltaport.demo.processes import ProcessGroup, hub_command
from deltaport.errors import AccessError, StateError, UntrustedCertificateError, UsageError
from deltaport.hub.client import HubClient
from deltaport.hub.server import uvicorn_config
from deltaport.hub.settings import HubServerSettings, HubTls, add_operator_token
from deltaport.oci import TransportOptions, copy_image
from deltaport.tlsutil import write_new
from tests.agent.hubdouble import HubDouble
from tests.fixtures.images import build_image, write_oci_layout
from tests.fixtures.services import Registry, free_port, run_registry
from tests.fixtures.tls import write_starter_tls

OPTS = TransportOptions(insecure=True)


def deltaport(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deltaport.cli.main", *args],
                          capture_output=True, text=True, timeout=60)


def test_hub_init_writes_a_starter_config_and_pair_and_never_overwrites(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    done = deltaport("hub", "init", str(data), "--self-signed", "hub.example,192.0.2.10")
    assert done.returncode == 0, done.stderr
    tls = data / "tls"
    assert (tls / "hub.key").stat().st_mode & 0o777 == 0o600
    assert (data / "hub.toml").stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((tls / "hub.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(n.value) for n in san} == {"hub.example", "192.0.2.10", "localhost",
                                           "127.0.0.1", "::1"}
    ssl.create_default_context(cafile=str(tls / "ca.crt"))  # a loadable CA file
    before = {p: p.read_bytes() for p in (data / "hub.toml", tls / "hub.key", tls / "hub.crt")}
    again = deltaport("hub", "init", str(data), "--self-signed", "other.example")
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tls.iterdir()) == ["ca.crt", "hub.crt", "hub.key"]
    bad = deltaport("hub", "init", str(tmp_path / "x"), "--self-signed", "no spaces!")
    assert bad.returncode == 2 and not (tmp_path / "x").exists()


def test_the_hub_serves_https_from_hub_init_and_an_agent_verifies_it(
        registry: Registry, tmp_path: Path) -> None:
    layouts = {}
    for tag, variant in (("v1", 0), ("v2", 1)):
        layout = write_oci_layout(tmp_path / f"layout-{tag}", build_image(variant), tag="t")
        layouts[tag] = f"oci:{layout}:t"
        copy_image(layouts[tag], registry.ref(f"demo/app:{tag}"), OPTS)
    data = tmp_path / "hub"
    done = deltaport("hub", "init", str(data), "--self-signed", "127.0.0.1", "--host",
                     "127.0.0.1")
    assert done.returncode == 0, done.stderr
    config = data / "hub.toml"
    config.write_text(config.read_text().replace("registry_insecure = false",
                                                 "registry_insecure = true"))
    operator = add_operator_token(config, "ci")  # hub init made the keys
    ca = data / "tls" / "ca.crt"
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    with (
        ProcessGroup(env={"DELTAPORT_HUB_CONFIG": str(config)}) as group,
        run_registry(tmp_path / "device-registry") as device_registry,
    ):
        hub = group.start("hub", hub_command(data, port), tmp_path / "hub.log")
        hub.wait_http(url + "/healthz", ca_file=ca)
        with HubClient(url, operator, timeout=120, ca_file=ca) as hc:
            copy_image(layouts["v1"], device_registry.ref("demo/app:v1"), OPTS)
            for t in ("v1", "v2"):
                hc.register_image(registry.ref(f"demo/app:{t}"))
            token = hc.add_device("edge-1", local_registry=device_registry.host)["token"]
            agent_config = AgentConfig(
                device="edge-1", trusted_keys=(data / "keys" / "deltaport.pub",),
                inbox=tmp_path / "inbox", state_dir=tmp_path / "state",
                registry=f"docker://{device_registry.host}",
                hub=HubSettings(url, token, timeout=10.0, ca_file=ca), poll_interval=0.2)
            with Agent(agent_config) as agent:
                assert agent.run_once().hub_error is None  # check-in over verified https
                plan = hc.deploy(f"services:\n  app:\n    image: {registry.host}/demo/app:v2\n",
                                 by="ci", email="ops@example.com", devices=["edge-1"])
                report = agent.run_once()
            assert report.hub_error is None and report.reconstructed == 1, report  # verified
            status = hc.deployment(plan["deployment"])
        assert status["devices"][0]["images"] == {f"{registry.host}/demo/app:v2": "present"}


def _settings(tmp_path: Path, **kwargs: object) -> HubServerSettings:
    fleet = Settings(data_dir=tmp_path, db_url=f"sqlite:///{tmp_path / 'hub.db'}")
    return HubServerSettings(fleet=fleet, **kwargs)  # type: ignore[arg-type]


def test_plain_http_only_on_loopback_unless_insecure(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"plain HTTP on 0\.0\.0\.0"):
        uvicorn_config(_settings(tmp_path, host="0.0.0.0"))
    assert uvicorn_config(_settings(tmp_path, host="0.0.0.0", insecure=True)).ssl_certfile is None
    assert uvicorn_config(_settings(tmp_path, host="127.0.0.1")).ssl_certfile is None
    files = write_starter_tls(tmp_path / "tls")
    served = uvicorn_config(_settings(tmp_path, host="0.0.0.0",
                                      tls=HubTls(files.cert, files.key)))
    assert served.ssl_certfile == str(files.cert) and served.ssl_keyfile == str(files.key)
    other = write_starter_tls(tmp_path / "other")
    with pytest.raises(UsageError, match="cannot load certificate"):
        uvicorn_config(_settings(tmp_path, tls=HubTls(files.cert, other.key)))


def test_hub_serve_on_a_public_address_without_tls_exits_with_a_reason(tmp_path: Path) -> None:
    env = {**os.environ, "DELTAPORT_HUB_CONFIG": str(tmp_path / "hub.toml")}
    done = subprocess.run(
        [sys.executable, "-m", "deltaport.cli.main", "hub", "serve", "--data-dir",
         str(tmp_path), "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and "tls_cert and tls_key" in done.stderr


def test_the_operator_client_verifies_the_hub_and_keeps_its_token_off_plain_http(
        tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="plain HTTP"):
        HubClient("http://hub.example:8080", "t")
    HubClient("http://hub.example:8080", "t", insecure=True).close()
    HubClient("http://127.0.0.1:8080", "t").close()  # the token stays on this machine
    ours, theirs = write_starter_tls(tmp_path / "ours"), write_starter_tls(tmp_path / "theirs")
    with HubDouble(tokens={}, tls=theirs.server_context()) as spoof:
        with (HubClient(spoof.url, "t", ca_file=ours.ca, timeout=5) as hc,
              pytest.raises(UntrustedCertificateError, match="certificate is not trusted")):
            hc.device("edge-1")
        assert spoof.requests == []
        with (HubClient(spoof.url, "t", ca_file=theirs.ca, timeout=5) as hc,
              pytest.raises(AccessError)):  # verified, then the double refuses the token
            hc.device("edge-1")
        assert spoof.requests != []


def test_hub_init_leaves_nothing_when_a_file_is_in_the_way(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    (data / "tls").mkdir(parents=True)
    (data / "tls" / "ca.crt").symlink_to(tmp_path / "elsewhere")  # even a dangling link
    done = deltaport("hub", "init", str(data), "--self-signed", "hub.example")
    assert done.returncode != 0 and "refusing to overwrite" in done.stderr
    assert sorted(p.name for p in data.rglob("*")) == ["ca.crt", "tls"]
    assert not (tmp_path / "elsewhere").exists()
    with pytest.raises(StateError, match="refusing to overwrite"):
        write_new(data / "tls" / "ca.crt", b"x")
    assert not (tmp_path / "elsewhere").exists()


def test_hub_init_makes_the_keys_and_a_first_operator_token(tmp_path: Path) -> None:
    """One command to a hub that signs bundles and manifests and lets an operator in."""
    from deltaport.bundle.keys import load_private_key
    from deltaport.fleet.queries import hash_token
    from deltaport.hub.settings import read_hub_config

    data = tmp_path / "hub"
    done = deltaport("hub", "init", str(data), "--operator", "alice", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    keys = data / "keys"
    assert sorted(Path(k).name for k in doc["keys"]) == ["deltaport.key", "manifest.key"]
    for name in ("deltaport", "manifest"):
        assert (keys / f"{name}.key").stat().st_mode & 0o777 == 0o600
        load_private_key(keys / f"{name}.key")
    config = read_hub_config(data / "hub.toml")
    assert hash_token(doc["token"]) in json.dumps(config) and doc["operator"] == "alice"
    kept = (keys / "deltaport.key").read_bytes()
    other = tmp_path / "other"
    (other / "keys").mkdir(parents=True)
    (other / "keys" / "deltaport.key").write_bytes(kept)  # a key of its own already there
    again = deltaport("hub", "init", str(other), "--json")
    assert again.returncode == 0, again.stderr
    assert [Path(k).name for k in json.loads(again.stdout)["keys"]] == ["manifest.key"]
    assert (other / "keys" / "deltaport.key").read_bytes() == kept  # never overwritten
