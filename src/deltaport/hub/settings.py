"""The hub's settings: a frozen value built once, at the edge, from options, file and environment.

The hub config file (``--config FILE``, else ``$DELTAPORT_HUB_CONFIG``, else
``<data dir>/hub.toml``) is TOML::

    host = "0.0.0.0"                 # optional; default 127.0.0.1
    port = 8443                      # optional; default 8080
    tls_cert = "tls/hub.crt"         # PEM certificate (chain) the hub presents: https
    tls_key = "tls/hub.key"          # its private key; both or neither, relative to this file
    insecure = false                 # true: serve plain HTTP on a non-loopback address
    registry_insecure = false        # plain-HTTP cloud registry (register, deploy)

    [[operators]]                    # one table per operator token (only its hash)
    name = "alice"
    token_hash = "sha256:…"
    created_at = "2026-11-27T19:00:00+00:00"

Operator tokens live here, hashed, rather than in the fleet database: they are few,
long-lived and belong to whoever runs the hub (like its TLS certificate), they can
be revoked by deleting a table, and the fleet schema stays the fleet's. With
several hub processes, the same file is deployed to each. ``deltaport hub token
create`` appends a table (atomically); a running hub picks it up when restarted.

Without ``tls_cert``/``tls_key`` the hub serves plain HTTP, and device and operator
tokens cross the network in clear: it does so on a loopback address only (behind a
TLS-terminating proxy, or for a test), with a warning; on any other address it
refuses to start unless ``insecure = true``. ``deltaport hub init DIR --self-signed
HOSTS`` writes a starter hub.toml with a certificate pair (``deltaport.tlsutil``).

Where state lives, the database and SMTP come from ``deltaport.config``
(``--data-dir``/``DELTAPORT_HOME``, ``--db``/``DELTAPORT_DB``, the data dir's
``config.toml``). Only :func:`load_hub_settings` and :func:`add_operator_token`
read or write files; everything else receives a :class:`HubServerSettings`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from deltaport.config import Settings, load_settings, read_toml_file
from deltaport.errors import FormatError, StateError, UsageError
from deltaport.fleet.models import utcnow
from deltaport.fleet.queries import hash_token, new_token
from deltaport.fsutil import write_atomic
from deltaport.tlsutil import is_loopback

HUB_CONFIG_NAME = "hub.toml"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
OPERATOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
_TOKEN_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
OPERATORS_MAX = 1000  # operator tokens in one config file


class OperatorRole(StrEnum):
    """What an operator token may do: ``viewer`` only looks (GET), ``operator`` also acts.

    A token written before roles existed has none in the config file: it is ``operator``.
    """

    VIEWER = "viewer"
    OPERATOR = "operator"


@dataclass(frozen=True)
class OperatorToken:
    """One operator token, as stored: who it belongs to, its hash and its role."""

    name: str
    token_hash: str = field(repr=False)
    role: OperatorRole = OperatorRole.OPERATOR

    @property
    def may_act(self) -> bool:
        """True if this token may change things (deploy, activate, retry, cancel)."""
        return self.role is OperatorRole.OPERATOR


@dataclass(frozen=True)
class HubLimits:
    """Named limits on what a hub reads from callers."""

    device_body_max: int = 8 * 1024 * 1024  # bytes of a check-in or status batch
    operator_body_max: int = 8 * 1024 * 1024  # bytes of a deploy request (manifest inside)
    status_batch_max: int = 1000  # messages in one status batch
    bundles_listed_max: int = 1000  # offers in one bundle list (docs/hub-api.md)
    sources_listed_max: int = 100  # source image IDs in one offer
    desired_manifest_max: int = 4 * 1024 * 1024  # bytes served as a desired manifest
    send_piece: int = 64 * 1024  # bytes per write when streaming a bundle


@dataclass(frozen=True)
class HubTls:
    """The certificate (chain) and private key the hub serves https with (PEM files)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class HubServerSettings:
    """Everything the hub needs to run, read once at start."""

    fleet: Settings
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    config_path: Path | None = None
    operators: tuple[OperatorToken, ...] = ()
    registry_insecure: bool = False
    tls: HubTls | None = None  # None: plain HTTP (see plain_http_refusal)
    insecure: bool = False  # plain HTTP allowed on a non-loopback address
    limits: HubLimits = field(default_factory=HubLimits)
    graceful_shutdown: float = 5.0  # seconds uvicorn waits for open requests on stop


def hub_config_path(config: Path | str | None, data_dir: Path, env: Mapping[str, str]) -> Path:
    """--config wins, then $DELTAPORT_HUB_CONFIG, then <data dir>/hub.toml."""
    chosen = config or env.get("DELTAPORT_HUB_CONFIG")
    return Path(chosen).expanduser() if chosen else data_dir / HUB_CONFIG_NAME


def load_hub_settings(
    *,
    config: Path | str | None = None,
    data_dir: Path | str | None = None,
    db_url: str | None = None,
    host: str | None = None,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> HubServerSettings:
    """Combine options (win), environment and the hub config file into settings.

    Raises:
        FormatError: the config file is unreadable, not TOML, or has wrong types.
    """
    environ = os.environ if env is None else env
    fleet = load_settings(data_dir, db_url, environ)
    path = hub_config_path(config, fleet.data_dir, environ)
    raw = read_hub_config(path)
    env_port = environ.get("DELTAPORT_HUB_PORT")
    return HubServerSettings(
        fleet=fleet,
        host=host or environ.get("DELTAPORT_HUB_HOST") or _str(raw, "host") or DEFAULT_HOST,
        port=_port(port if port is not None else env_port or raw.get("port", DEFAULT_PORT)),
        config_path=path,
        operators=parse_operators(raw.get("operators", [])),
        registry_insecure=_bool(raw, "registry_insecure"),
        tls=parse_tls(raw, path.parent),
        insecure=_bool(raw, "insecure"),
    )


def parse_tls(raw: Mapping[str, Any], base: Path) -> HubTls | None:
    """``tls_cert`` and ``tls_key`` (both or neither), relative to the config's folder.

    Raises:
        FormatError: only one of them, or not strings.
    """
    cert, key = _str(raw, "tls_cert"), _str(raw, "tls_key")
    if cert is None and key is None:
        return None
    if not cert or not key:
        raise FormatError("hub config: tls_cert and tls_key go together (both or neither)")
    return HubTls(base / Path(cert).expanduser(), base / Path(key).expanduser())


def plain_http_refusal(settings: HubServerSettings) -> str | None:
    """Why the hub must not start on plain HTTP, or None (it has TLS, or may go without)."""
    if settings.tls is not None or settings.insecure or is_loopback(settings.host):
        return None
    return (f"the hub would serve plain HTTP on {settings.host}: tokens would cross the "
            "network in clear. Set tls_cert and tls_key in the hub config (`deltaport hub "
            "init DIR --self-signed HOST` makes a starter pair), or insecure = true")


def starter_config_text(*, host: str, port: int, tls: bool) -> str:
    """A starter hub.toml; with TLS it names the files ``hub init`` writes in ``tls/``."""
    lines = [
        "# deltaport hub configuration (see deltaport.hub.settings for every key)",
        f"host = {json.dumps(host)}",
        f"port = {port}",
    ]
    if tls:
        lines += ['tls_cert = "tls/hub.crt"  # give devices and operators tls/ca.crt',
                  'tls_key = "tls/hub.key"']
    else:
        lines += ['# tls_cert = "tls/hub.crt"  # without these two the hub serves plain HTTP',
                  '# tls_key = "tls/hub.key"   # (on a loopback address only)']
    lines.append("registry_insecure = false  # true: the cloud registry is plain HTTP")
    return "\n".join(lines) + "\n"


def read_hub_config(path: Path) -> dict[str, Any]:
    """The hub config file as a dict; {} when it does not exist."""
    return read_toml_file(path)


def parse_operators(raw: Any) -> tuple[OperatorToken, ...]:
    """The [[operators]] tables, checked."""
    if not isinstance(raw, list) or len(raw) > OPERATORS_MAX:
        raise FormatError(f"hub config 'operators' must be a list of at most {OPERATORS_MAX}")
    out = []
    for i, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        digest = item.get("token_hash") if isinstance(item, dict) else None
        if not isinstance(name, str) or not OPERATOR_NAME.fullmatch(name):
            raise FormatError(f"hub config operators[{i}].name is missing or invalid")
        if not isinstance(digest, str) or not _TOKEN_HASH.match(digest):
            raise FormatError(f"hub config operators[{i}].token_hash must be sha256:<64 hex>")
        role = item.get("role", OperatorRole.OPERATOR.value)
        if role not in {r.value for r in OperatorRole}:
            raise FormatError(f"hub config operators[{i}].role must be 'viewer' or 'operator'")
        out.append(OperatorToken(name, digest, OperatorRole(role)))
    return tuple(out)


def add_operator_token(
    path: Path, name: str, role: OperatorRole = OperatorRole.OPERATOR
) -> str:
    """Mint a token for operator NAME with ROLE, append its hash to the config; return it.

    The file is rewritten atomically (temp file in the same folder, then rename).

    Raises:
        UsageError: invalid name. StateError: the operator has a token already.
        FormatError: the existing file is not valid. StorageError: cannot write.
    """
    if not OPERATOR_NAME.fullmatch(name):
        raise UsageError(f"invalid operator name {name!r} (letters, digits, . _ @ -)")
    existing = parse_operators(read_hub_config(path).get("operators", []))
    if any(op.name == name for op in existing):
        raise StateError(f"operator {name!r} already has a token in {path} (remove it first)")
    token = new_token()
    old = path.read_bytes() if path.is_file() else b""
    entry = (
        f'\n[[operators]]\nname = "{name}"\ntoken_hash = "{hash_token(token)}"\n'
        f'role = "{role.value}"\ncreated_at = "{utcnow().isoformat()}"\n'
    )
    data = old.rstrip(b"\n") + b"\n" + entry.encode() if old else entry.lstrip().encode()
    write_atomic(path, data, mode=0o600)
    return token


def _str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise FormatError(f"hub config {key!r} must be a string")
    return value


def _bool(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise FormatError(f"hub config {key!r} must be true or false")
    return value


def _port(value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"hub port {value!r} is not a number") from exc
    if not 0 <= port < 65536:
        raise FormatError(f"hub port {port} must be between 0 and 65535")
    return port
