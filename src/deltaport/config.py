"""Settings for the operator side: where state lives, which database, how to send email.

Everything a hub or operator keeps lives under one data directory, chosen by
``--data-dir``, else the ``DELTAPORT_HOME`` environment variable, else a per-user
default (``$XDG_DATA_HOME/deltaport`` or ``~/.local/share/deltaport``). The data
directory may hold ``config.toml``::

    db = "postgresql+psycopg://deltaport@db/deltaport"   # optional; default SQLite file

    [smtp]
    host = "smtp.example.com"
    port = 587
    security = "starttls"          # "none" | "starttls" | "tls"
    username = "deltaport"
    password = "..."
    sender = "deltaport@example.com"

The environment and files are read only here, by :func:`load_settings`, which the CLI
and the app factory call; everything else receives a frozen :class:`Settings`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deltaport.errors import FormatError

CONFIG_FILE_NAME = "config.toml"
CONFIG_MAX_BYTES = 256 * 1024  # a config file larger than this is certainly wrong
SMTP_SECURITY_MODES = ("none", "starttls", "tls")
BUILD_MODES = ("inline", "workers")  # bundles built in the deploying process, or by workers


@dataclass(frozen=True)
class SmtpSettings:
    """How to reach the SMTP server that carries deployment emails."""

    host: str = "localhost"
    port: int = 25
    security: str = "none"  # "none" | "starttls" | "tls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "deltaport@localhost"
    timeout: float = 30.0  # seconds per SMTP operation


@dataclass(frozen=True)
class Settings:
    """Where the operator side keeps its state and how it talks to the outside."""

    data_dir: Path
    db_url: str
    smtp: SmtpSettings | None = None
    db_busy_timeout: float = 5.0  # seconds SQLite waits for a lock before failing
    store: str | None = None  # "s3://bucket/prefix" (config `store`, DELTAPORT_STORE); None: outbox
    s3_endpoint: str | None = None  # config `s3_endpoint`, else AWS_ENDPOINT_URL / AWS's own
    builds: str = "inline"  # config `builds` / DELTAPORT_BUILDS: "inline" | "workers" (jobs)

    @property
    def store_dir(self) -> Path:
        """The bundle store folder (outbox a third-party transfer tool syncs)."""
        return self.data_dir / "outbox"

    @property
    def signatures_dir(self) -> Path:
        """Where image signature files are kept."""
        return self.data_dir / "signatures"

    @property
    def keys_dir(self) -> Path:
        """Where the bundle-signing keys are kept."""
        return self.data_dir / "keys"

    @property
    def patch_cache_dir(self) -> Path:
        """Layer patches already built, reused by later bundles (``delta.patchcache``)."""
        return self.data_dir / "patch-cache"


def default_data_dir(env: Mapping[str, str]) -> Path:
    """The per-user default data directory (XDG data home, else ~/.local/share)."""
    xdg = env.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "deltaport"


def resolve_data_dir(data_dir: Path | str | None, env: Mapping[str, str]) -> Path:
    """--data-dir wins, then DELTAPORT_HOME, then the per-user default."""
    if data_dir:
        return Path(data_dir).expanduser()
    home = env.get("DELTAPORT_HOME")
    if home:
        return Path(home).expanduser()
    return default_data_dir(env)


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite database file."""
    return f"sqlite:///{path}"


def load_settings(
    data_dir: Path | str | None = None,
    db_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Read the data directory's config.toml and combine it with explicit options.

    Raises:
        FormatError: config.toml is unreadable, too large, or has wrong types.
    """
    environ = os.environ if env is None else env
    root = resolve_data_dir(data_dir, environ)
    raw = read_toml_file(root / CONFIG_FILE_NAME)
    db = db_url or _opt_str(raw, "db") or sqlite_url(root / "deltaport.db")
    smtp_raw = raw.get("smtp")
    smtp = _parse_smtp(smtp_raw) if smtp_raw is not None else None
    store = environ.get("DELTAPORT_STORE") or _opt_str(raw, "store")
    builds = environ.get("DELTAPORT_BUILDS") or _opt_str(raw, "builds") or "inline"
    if builds not in BUILD_MODES:
        raise FormatError(f"builds must be one of {', '.join(BUILD_MODES)}, not {builds!r}")
    return Settings(data_dir=root, db_url=normalize_db_url(db), smtp=smtp, store=store,
                    s3_endpoint=_opt_str(raw, "s3_endpoint"), builds=builds)


def normalize_db_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def read_toml_file(path: Path) -> dict[str, Any]:
    """A TOML config file as a dict ({} when it does not exist), bounded in size.

    Raises:
        FormatError: unreadable, over CONFIG_MAX_BYTES, or not valid TOML.
    """
    try:
        with path.open("rb") as fh:
            data = fh.read(CONFIG_MAX_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc}") from exc
    if len(data) > CONFIG_MAX_BYTES:
        raise FormatError(f"{path} is larger than {CONFIG_MAX_BYTES} bytes")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FormatError(f"{path} is not valid TOML: {exc}") from exc


def _opt_str(table: Mapping[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise FormatError(f"config key {key!r} must be a string")
    return value


def _parse_smtp(raw: object) -> SmtpSettings:
    if not isinstance(raw, dict):
        raise FormatError("config [smtp] must be a table")
    port = raw.get("port", 25)
    timeout = raw.get("timeout", 30.0)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise FormatError("config smtp.port must be an integer between 1 and 65535")
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise FormatError("config smtp.timeout must be a positive number")
    security = _opt_str(raw, "security") or "none"
    if security not in SMTP_SECURITY_MODES:
        raise FormatError(f"config smtp.security must be one of {', '.join(SMTP_SECURITY_MODES)}")
    return SmtpSettings(
        host=_opt_str(raw, "host") or "localhost",
        port=port,
        security=security,
        username=_opt_str(raw, "username"),
        password=_opt_str(raw, "password"),
        sender=_opt_str(raw, "sender") or "deltaport@localhost",
        timeout=float(timeout),
    )
