"""The demo fleet on disk: the hub's data dir and one agent configuration per device.

Devices start from different inventories, cycling through :data:`START_KINDS`:

- ``empty``: nothing in its registry (the first image comes whole, compressed);
- ``has-v1``: already has v1 of the app (nothing to send for v1);
- ``shares-base``: has only an unrelated "tools" image that shares the base layer
  (the delta draws on it).

Only :func:`prepare_hub_dir` and :func:`write_agent_config` write files; the rest is pure.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

from deltaport.bundle.keys import generate_keypair
from deltaport.errors import UsageError
from deltaport.hub.settings import add_operator_token
from deltaport.tlsutil import parse_hosts, starter_pair, write_new

START_KINDS = ("empty", "has-v1", "shares-base")
DEVICES_MAX = 26  # dev-a … dev-z
OPERATOR = "demo"
REQUESTER_EMAIL = "ops@example.com"


@dataclass(frozen=True)
class DeviceSetup:
    """One demo device: its name and what its registry holds at the start."""

    name: str
    start: str  # one of START_KINDS


def device_setups(count: int) -> list[DeviceSetup]:
    """COUNT devices dev-a, dev-b, … with starting inventories cycling through START_KINDS.

    Raises:
        UsageError: COUNT is not between 1 and DEVICES_MAX.
    """
    if not 1 <= count <= DEVICES_MAX:
        raise UsageError(f"--devices must be between 1 and {DEVICES_MAX}, got {count}")
    return [
        DeviceSetup(f"dev-{string.ascii_lowercase[i]}", START_KINDS[i % len(START_KINDS)])
        for i in range(count)
    ]


@dataclass(frozen=True)
class HubFiles:
    """What the demo needs to know about the hub it prepared."""

    data_dir: Path
    operator_token: str
    public_key: Path  # the key agents trust for bundles
    manifest_public_key: Path  # the key agents trust for desired manifests
    ca_file: Path  # the CA the hub's https certificate chains to (agents and operators)


def _toml_str(value: str) -> str:
    """VALUE as a TOML basic string (JSON string escapes are valid TOML)."""
    return json.dumps(value)


def hub_config_text(*, smtp: tuple[str, int] | None) -> tuple[str, str]:
    """(hub.toml, config.toml) for an https hub reading a plain-HTTP cloud registry."""
    hub = 'registry_insecure = true\ntls_cert = "tls/hub.crt"\ntls_key = "tls/hub.key"\n'
    config = ""
    if smtp is not None:
        config = (
            f"[smtp]\nhost = {_toml_str(smtp[0])}\nport = {smtp[1]}\nsecurity = \"none\"\n"
            'sender = "deltaport-hub@example.com"\ntimeout = 10\n'
        )
    return hub, config


def prepare_hub_dir(data_dir: Path, *, smtp: tuple[str, int] | None = None,
                    hosts: str = "127.0.0.1") -> HubFiles:
    """Make the hub's data dir: signing keys, a starter TLS pair for HOSTS (comma-separated;
    loopback names are always in), hub.toml with an operator token, SMTP settings.

    Raises:
        StorageError: a file cannot be written. StateError: a TLS file exists already.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    pair = starter_pair(parse_hosts(hosts))
    write_new(data_dir / "tls" / "hub.key", pair.key_pem, mode=0o600)
    write_new(data_dir / "tls" / "hub.crt", pair.cert_pem)
    write_new(data_dir / "tls" / "ca.crt", pair.ca_pem)
    keys = generate_keypair(data_dir / "keys")
    manifest_keys = generate_keypair(data_dir / "keys", "manifest")
    hub_toml, config_toml = hub_config_text(smtp=smtp)
    (data_dir / "hub.toml").write_text(hub_toml)
    if config_toml:
        (data_dir / "config.toml").write_text(config_toml)
    token = add_operator_token(data_dir / "hub.toml", OPERATOR)
    return HubFiles(data_dir, token, keys.public_key_path, manifest_keys.public_key_path,
                    data_dir / "tls" / "ca.crt")


@dataclass(frozen=True)
class AgentFiles:
    """Where one device's agent keeps its things."""

    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "agent.toml"

    @property
    def desired_manifest(self) -> Path:
        return self.folder / "desired.json"

    @property
    def log(self) -> Path:
        return self.folder / "agent.log"


def agent_config_text(
    *,
    device: str,
    token: str,
    hub_url: str,
    registry_host: str,
    public_key: Path,
    poll_interval: float,
    manifest_key: Path,
    docker_host: str | None = None,
    registry_root: Path | None = None,
    ca_file: Path | None = None,
    insecure: bool = False,
) -> str:
    """agent.toml for DEVICE (paths relative to the file's folder).

    CA_FILE verifies an https hub; INSECURE lets the agent talk to a plain-HTTP one.
    """
    lines = [
        f"device = {_toml_str(device)}",
        f"trusted_keys = [{_toml_str(str(public_key))}]",
        'inbox = "inbox"',
        'state_dir = "state"',
        f"registry = {_toml_str('docker://' + registry_host)}",
        'desired_manifest = "desired.json"',
        f"poll_interval = {poll_interval}",
        "inbox_settle_seconds = 5",
        "min_free_bytes = 0",
        "",
        "[hub]",
        f"url = {_toml_str(hub_url)}",
        f"token = {_toml_str(token)}",
        "timeout = 20",
        *([f"ca_file = {_toml_str(str(ca_file))}"] if ca_file is not None else []),
        *(["insecure = true"] if insecure else []),
        "",
        "[runtime]",
        f"kind = {_toml_str('engine' if docker_host else 'file')}",
        f"manifest_keys = [{_toml_str(str(manifest_key))}]",
    ]
    if docker_host is not None:
        lines += [f"docker_host = {_toml_str(docker_host)}",
                  "health_window = 5", "health_grace = 60", "health_poll = 0.5",
                  "stop_timeout = 2"]
    if registry_root is not None:
        lines.append(f"registry_root = {_toml_str(str(registry_root))}")
    return "\n".join(lines) + "\n"


def write_agent_config(folder: Path, text: str) -> AgentFiles:
    """Write agent.toml into FOLDER (created); the file is private (it holds a token)."""
    files = AgentFiles(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files.config.touch(mode=0o600)
    files.config.write_text(text)
    return files
