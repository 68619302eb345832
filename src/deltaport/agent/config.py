"""The agent's configuration: one frozen value, read from a TOML file at the edge.

Example ``agent.toml`` (relative paths are relative to the file's directory)::

    device = "dev-1"
    root_keys = ["keys/root.pub"]  # docs/trust.md: the root certifies the signing keys
    trusted_keys = ["keys/deltaport.pub"]  # or pinned keys, trusted for ever (either is needed)
    inbox = "/var/lib/deltaport/inbox"
    state_dir = "/var/lib/deltaport/state"
    registry = "docker://127.0.0.1:5000"
    desired_manifest = "/etc/deltaport/desired.json"
    max_rate = 100000            # bytes/s for hub downloads; omit for no cap
    poll_interval = 30           # seconds between passes

    [hub]                        # omit the whole table for inbox-only mode
    url = "https://hub.example:8443"
    token = "dp_dev_..."         # or token_file = "hub.token"
    ca_file = "hub-ca.crt"       # the CA the hub's certificate must chain to (hub init's
                                 # tls/ca.crt); omit to use the system trust store
    bundle_origins = ["https://cdn.example"]  # other places offers may point at (no token)
    insecure = false             # true: allow a plain http:// hub (warned at every start)

    [runtime]                    # what runs the modules (docs/device-runtime.md)
    kind = "engine"              # engine: the agent drives a Docker-API engine;
                                 # file: write the verified manifest to desired_manifest;
                                 # none (default without desired_manifest): images only
    docker_host = "unix:///run/podman/podman.sock"
    manifest_keys = ["keys/manifest.pub"]  # who may sign desired manifests
    health_window = 60           # seconds every module must stay up (and healthy)
    health_grace = 120           # extra seconds to get there
    keep_free = 0.2              # fraction of the registry's disk kept free
    registry_root = "/var/lib/registry"
    registry_gc_command = ["/usr/local/sbin/registry-gc"]  # stop, garbage-collect, start

Only :func:`load_config` touches the file system; :func:`config_from_mapping` is pure.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from deltaport.agent.runtime.model import RuntimeKind, RuntimeSettings
from deltaport.errors import UsageError

CONFIG_MAX_BYTES = 256 * 1024  # an agent.toml larger than this is not one
TOKEN_MAX_BYTES = 4096
DAY = 86_400.0


@dataclass(frozen=True)
class HubSettings:
    """Where the hub is, how the device proves who it is, and whom it trusts on the way.

    https with certificate verification is the only default: ``http://`` (URL or bundle
    origin) is refused unless ``insecure`` is set, so no direct construction can make
    the agent send its token in clear by accident.
    """

    url: str  # base URL, e.g. "https://hub.example:8443"; the API lives under /api/v1
    token: str = field(repr=False)  # the device token, sent as "Authorization: Bearer <token>"
    timeout: float = 30.0  # seconds for one API call (not for bundle downloads)
    ca_file: Path | None = None  # verify the hub against this CA alone; None: system store
    insecure: bool = False  # allow plain http:// (the agent warns at every start)
    bundle_origins: tuple[str, ...] = ()  # "https://cdn.example": offers may point there too

    def __post_init__(self) -> None:
        for where, url in (("hub.url", self.url),
                           *(("hub.bundle_origins", o) for o in self.bundle_origins)):
            if not url.startswith(("http://", "https://")):
                raise UsageError(f"agent config: {where} must start with https://, not {url!r}")
            if url.startswith("http://") and not self.insecure:
                raise UsageError(
                    f"agent config: {where} {url} is plain HTTP: the device token and what "
                    "the hub says would cross the network unprotected. Use https:// (with "
                    "hub.ca_file for a private CA), or set hub.insecure = true")


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs; built once by the CLI, never read from globals.

    ``hub`` None means inbox-only mode: bundles arrive only through the inbox folder and
    status messages stay in the outbox (``deltaport agent status`` shows them).
    """

    device: str
    trusted_keys: tuple[Path, ...]
    inbox: Path
    state_dir: Path
    registry: str  # the local registry, "docker://127.0.0.1:5000"
    desired_manifest: Path | None = None
    hub: HubSettings | None = None
    max_rate: int | None = None  # bytes/s cap for hub downloads
    poll_interval: float = 30.0  # seconds between passes of ``run``
    inventory_interval: float = 3600.0  # seconds between unconditional check-ins
    inbox_settle_seconds: float = 60.0  # a bad, complete-sized file untouched this long fails
    inbox_stale_seconds: float = 7 * DAY  # a truncated file untouched this long fails; 0: never
    download_max_attempts: int = 8  # consecutive attempts without progress before a pass gives up
    head_probe_bytes: int = 4096  # bytes of a bundle fetched first to read its head
    min_free_bytes: int = 64 * 1024 * 1024  # disk kept free beyond a reconstruction's estimate
    docker_host: str | None = None  # "unix:///run/podman.sock": also pull into this engine
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    root_keys: tuple[Path, ...] = ()  # root public keys: signing keys come from key lists

    @property
    def registry_host(self) -> str:
        """``127.0.0.1:5000`` of ``docker://127.0.0.1:5000``."""
        return self.registry.removeprefix("docker://").rstrip("/")

    @property
    def database(self) -> Path:
        """The SQLite file holding the outbox and the bundle ledger."""
        return self.state_dir / "agent.db"


def _field_defaults(cls: type) -> dict[str, Any]:
    """The declared defaults of dataclass CLS: the one place each default is defined."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


_AGENT_DEFAULTS = _field_defaults(AgentConfig)
_HUB_DEFAULTS = _field_defaults(HubSettings)
_RUNTIME_DEFAULTS = _field_defaults(RuntimeSettings)

_KNOWN = {
    "device", "trusted_keys", "inbox", "state_dir", "registry", "desired_manifest", "hub",
    "max_rate", "poll_interval", "inventory_interval", "inbox_settle_seconds",
    "inbox_stale_seconds", "download_max_attempts", "min_free_bytes", "docker_host", "runtime",
    "root_keys",
}
_HUB_KNOWN = {"url", "token", "token_file", "timeout", "ca_file", "insecure", "bundle_origins"}
_RUNTIME_KNOWN = {
    "kind", "docker_host", "manifest_keys", "health_window", "health_grace", "health_poll",
    "stop_timeout", "max_interruptions", "heartbeat_interval", "keep_free", "registry_root",
    "registry_gc_command",
}


def config_from_mapping(doc: Mapping[str, Any], base: Path,
                        read_token: Any = None) -> AgentConfig:
    """Check a decoded config document; relative paths are resolved against ``base``.

    ``read_token(path) -> str`` reads a ``hub.token_file`` (the only I/O, injected).

    Raises:
        UsageError: a missing or mistyped setting, or an unknown one (typos fail loudly).
    """
    unknown = sorted(set(doc) - _KNOWN)
    if unknown:
        raise UsageError(f"agent config: unknown setting(s) {', '.join(unknown)}")
    roots = _paths(base, doc.get("root_keys", []), "root_keys")
    keys = doc.get("trusted_keys", [] if roots else None)
    if not isinstance(keys, list) or not (keys or roots) or not all(
            isinstance(k, str) for k in keys):
        raise UsageError("agent config: trusted_keys must be a non-empty list of key paths "
                         "(or give root_keys, docs/trust.md)")
    registry = _string(doc, "registry")
    if not registry.startswith("docker://") or "/" in registry.removeprefix("docker://").strip("/"):
        raise UsageError("agent config: registry must look like docker://127.0.0.1:5000")
    manifest = _optional_string(doc, "desired_manifest")

    def number(key: str, kind: type, *, zero_ok: bool = False) -> Any:
        return _number(doc, key, _AGENT_DEFAULTS[key], kind, zero_ok=zero_ok)

    return AgentConfig(
        device=_string(doc, "device"),
        trusted_keys=tuple(_path(base, k) for k in keys),
        inbox=_path(base, _string(doc, "inbox")),
        state_dir=_path(base, _string(doc, "state_dir")),
        registry=registry,
        desired_manifest=_path(base, manifest) if manifest is not None else None,
        hub=_hub(doc.get("hub"), base, read_token),
        max_rate=number("max_rate", int),
        poll_interval=number("poll_interval", float),
        inventory_interval=number("inventory_interval", float),
        inbox_settle_seconds=number("inbox_settle_seconds", float, zero_ok=True),
        inbox_stale_seconds=number("inbox_stale_seconds", float, zero_ok=True),
        download_max_attempts=number("download_max_attempts", int),
        min_free_bytes=number("min_free_bytes", int, zero_ok=True),
        docker_host=_optional_string(doc, "docker_host"),
        runtime=_runtime(doc.get("runtime"), base, manifest, bool(roots)),
        root_keys=roots,
    )


def _paths(base: Path, raw: Any, where: str) -> tuple[Path, ...]:
    if not isinstance(raw, list) or not all(isinstance(k, str) and k for k in raw):
        raise UsageError(f"agent config: {where} must be a list of paths")
    return tuple(_path(base, k) for k in raw)


def _runtime(raw: Any, base: Path, desired_manifest: Any, roots: bool = False) -> RuntimeSettings:
    """The ``[runtime]`` table; a top-level ``desired_manifest`` alone means kind "file"."""
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise UsageError("agent config: [runtime] must be a table")
    unknown = sorted(set(raw) - _RUNTIME_KNOWN)
    if unknown:
        raise UsageError(f"agent config: unknown runtime setting(s) {', '.join(unknown)}")
    default = RuntimeKind.FILE if isinstance(desired_manifest, str) else RuntimeKind.NONE
    try:
        kind = RuntimeKind(raw.get("kind", default))
    except ValueError as exc:
        raise UsageError("agent config: runtime.kind must be engine, file or none") from exc
    keys = _paths(base, raw.get("manifest_keys", []), "runtime.manifest_keys")
    if kind is not RuntimeKind.NONE and not keys and not roots:
        raise UsageError(f"agent config: runtime kind {kind} needs runtime.manifest_keys "
                         "(the public keys that may sign desired manifests)")
    host = _optional_string(raw, "docker_host", "runtime.docker_host")
    if kind is RuntimeKind.ENGINE and host is None:
        raise UsageError("agent config: runtime kind engine needs runtime.docker_host")
    if kind is RuntimeKind.FILE and not isinstance(desired_manifest, str):
        raise UsageError("agent config: runtime kind file needs desired_manifest (a path)")
    keep_free = _number(raw, "keep_free", _RUNTIME_DEFAULTS["keep_free"], float, zero_ok=True,
                        where="runtime.keep_free")
    if keep_free >= 1:
        raise UsageError("agent config: runtime.keep_free is a fraction below 1")
    root = _optional_string(raw, "registry_root", "runtime.registry_root")
    gc = raw.get("registry_gc_command", [])
    if not isinstance(gc, list) or not all(isinstance(a, str) for a in gc):
        raise UsageError("agent config: runtime.registry_gc_command must be a list of strings")

    def number(key: str, kind: type = float) -> Any:
        return _number(raw, key, _RUNTIME_DEFAULTS[key], kind, where=f"runtime.{key}")

    return RuntimeSettings(
        kind=kind, docker_host=host, manifest_keys=keys,
        desired_file=_path(base, desired_manifest) if isinstance(desired_manifest, str) else None,
        health_window=number("health_window"), health_grace=number("health_grace"),
        health_poll=number("health_poll"), stop_timeout=number("stop_timeout"),
        max_interruptions=number("max_interruptions", int),
        heartbeat_interval=number("heartbeat_interval"), keep_free=keep_free,
        registry_root=_path(base, root) if root is not None else None,
        registry_gc_command=tuple(gc),
    )


def _hub(raw: Any, base: Path, read_token: Any) -> HubSettings | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise UsageError("agent config: [hub] must be a table")
    unknown = sorted(set(raw) - _HUB_KNOWN)
    if unknown:
        raise UsageError(f"agent config: unknown hub setting(s) {', '.join(unknown)}")
    url = _string(raw, "url", "hub.url").rstrip("/")
    insecure = raw.get("insecure", False)
    if not isinstance(insecure, bool):
        raise UsageError("agent config: hub.insecure must be true or false")
    origins = raw.get("bundle_origins", [])
    if not isinstance(origins, list) or not all(isinstance(o, str) and o for o in origins):
        raise UsageError("agent config: hub.bundle_origins must be a list of URLs")
    ca_file = raw.get("ca_file")
    if ca_file is not None and not (isinstance(ca_file, str) and ca_file):
        raise UsageError("agent config: hub.ca_file must be a path")
    token = raw.get("token")
    token_file = _optional_string(raw, "token_file", "hub.token_file")
    if token is None and token_file is not None and read_token is not None:
        token = str(read_token(_path(base, token_file))).strip()
    if not isinstance(token, str) or not token:
        raise UsageError("agent config: hub.token (or hub.token_file) is required")
    return HubSettings(url=url, token=token,
                       timeout=_number(raw, "timeout", _HUB_DEFAULTS["timeout"], float,
                                       where="hub.timeout"),
                       ca_file=_path(base, ca_file) if ca_file is not None else None,
                       insecure=insecure, bundle_origins=tuple(o.rstrip("/") for o in origins))


def _string(doc: Mapping[str, Any], key: str, where: str | None = None) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise UsageError(f"agent config: {where or key} must be a non-empty string")
    return value


def _optional_string(doc: Mapping[str, Any], key: str, where: str | None = None) -> str | None:
    """DOC[KEY] when given (a non-empty string), else None; any other value is refused."""
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise UsageError(f"agent config: {where or key} must be a non-empty string, "
                         f"not {value!r}")
    return value


def _number(doc: Mapping[str, Any], key: str, default: Any, kind: type, *,
            zero_ok: bool = False, where: str | None = None) -> Any:
    value = doc.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (
        kind is int and not isinstance(value, int)
    ):
        raise UsageError(f"agent config: {where or key} must be a {kind.__name__}")
    if value < 0 or (value == 0 and not zero_ok):
        raise UsageError(f"agent config: {where or key} must be > 0, got {value}")
    return kind(value)


def _path(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def load_config(path: Path) -> AgentConfig:
    """Read and check ``agent.toml``.

    Raises:
        UsageError: the file is missing, too large, not TOML, or a setting is wrong.
    """
    try:
        data = path.read_bytes()[: CONFIG_MAX_BYTES + 1]
        if len(data) > CONFIG_MAX_BYTES:
            raise UsageError(f"{path}: larger than {CONFIG_MAX_BYTES} bytes")
        doc = tomllib.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read agent config {path}: {exc}") from exc
    return config_from_mapping(doc, path.resolve().parent, _read_token_file)


def _read_token_file(path: Path) -> str:
    try:
        return path.read_bytes()[:TOKEN_MAX_BYTES].decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read hub token file {path}: {exc}") from exc
