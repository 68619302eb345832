"""From a verified desired manifest to the containers to create: pure, no I/O.

``module_specs(state)`` reads the deployment document of a :class:`DesiredState` and
gives one :class:`ModuleSpec` per module, in startup order, each with a Docker Engine
API ContainerCreate body (``POST /containers/create``) that every Docker-API engine
understands (Docker/moby, balena-engine, podman's compat API). Two document kinds:

- **IoT Edge** (``modulesContent.$edgeAgent["properties.desired"]``): the body is the
  module's ``settings.createOptions`` as written (joined from its 512-character chunks
  ``createOptions``, ``createOptions01``, … as edgeAgent does), plus ``env`` and the
  restart policy. ``edgeAgent``/``edgeHub`` are skipped: deltaport is the agent.
- **Compose** (``services``): the keys of the compose-spec that devices rely on are
  mapped onto the body; the rest are reported as warnings, not errors, so a manifest
  written for a workstation still deploys, and the operator is told what was dropped.

The image is never taken from the document: it is the signed ``modules`` entry
(reference + image ID); the engine driver sets ``Image`` to the verified image ID and
adds deltaport's labels. Bad input raises :class:`FormatError` with a one-line message
naming the module and the key.
"""

from __future__ import annotations

import copy
import heapq
import json
import math
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from deltaport.agent.runtime.model import DesiredStatus, ModuleSpec, RestartPolicy
from deltaport.desired import DesiredState, ManifestKind
from deltaport.errors import FormatError

CREATE_OPTIONS_CHUNK = 512  # characters per createOptions chunk, as edgeAgent writes them
MAX_CREATE_OPTIONS_CHUNKS = 100  # createOptions, createOptions01 … createOptions99
MAX_STARTUP_ORDER = 4294967295  # IoT Edge: uint32, the default (starts last)
EDGE_SYSTEM_MODULES = frozenset({"edgeAgent", "edgeHub"})
NANOSECONDS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
               "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_CHUNK_KEY = re.compile(r"createOptions(\d*)")
MAX_PORT = 65535

# IoT Edge restartPolicy -> the engine's HostConfig.RestartPolicy.Name. on-unhealthy:
# the engine restarts on exit ("always"); restarting on *unhealthy* is the agent's job
# (engines never restart a container for failing its healthcheck).
EDGE_ENGINE_RESTART = {
    RestartPolicy.NEVER: "no",
    RestartPolicy.ON_FAILURE: "on-failure",
    RestartPolicy.ON_UNHEALTHY: "always",
    RestartPolicy.ALWAYS: "always",
}


@dataclass(frozen=True)
class SpecSet:
    """The containers of one desired manifest, in startup order, and what was dropped."""

    modules: tuple[ModuleSpec, ...]
    warnings: tuple[str, ...]


def module_specs(state: DesiredState) -> SpecSet:
    """Every module of STATE's deployment document as a ModuleSpec, in startup order.

    Raises:
        FormatError: the document is malformed, or names a module the signed modules
            list does not (the message names the module and the key).
    """
    warnings: list[str] = []
    if state.kind is ManifestKind.IOTEDGE:
        specs = _iotedge_specs(state, warnings)
    else:
        specs = _compose_specs(state, warnings)
    ordered = sorted(specs, key=lambda s: (s.startup_order, s.module))
    return SpecSet(tuple(ordered), tuple(warnings))


# -- shared helpers -------------------------------------------------------------------


def _fail(where: str, message: str) -> FormatError:
    return FormatError(f"{where}: {message}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, f"must be an object, not {type(value).__name__}")
    return value


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(where, "must be a list of strings")
    return list(value)


def _scalar_text(value: Any, where: str) -> str:
    """A JSON scalar as an environment/label value: strings as they are, true -> "true"."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise _fail(where, f"must be a string or number, not {type(value).__name__}")


def _image_entry(state: DesiredState, module: str, where: str) -> tuple[str, str]:
    try:
        entry = state.image_of(module)
    except KeyError as exc:
        raise _fail(where, "is not in the signed modules list (no image for it)") from exc
    return entry.reference, entry.image_id


def _set_env(body: dict[str, Any], name: str, value: str) -> None:
    """Put NAME=VALUE into body["Env"], replacing an entry of the same name."""
    env = [e for e in body.get("Env") or [] if e.split("=", 1)[0] != name]
    env.append(f"{name}={value}")
    body["Env"] = env


# -- IoT Edge ---------------------------------------------------------------------------


def _iotedge_specs(state: DesiredState, warnings: list[str]) -> list[ModuleSpec]:
    desired = _edge_desired(state.manifest)
    specs: list[ModuleSpec] = []
    system = _mapping(desired.get("systemModules", {}), "$edgeAgent systemModules")
    for name in system:
        if name in EDGE_SYSTEM_MODULES:
            warnings.append(f"system module {name} is skipped: deltaport is the device agent")
        else:
            specs.append(_edge_module(state, name, system[name], warnings))
    modules = _mapping(desired.get("modules", {}), "$edgeAgent modules")
    for name, entry in modules.items():
        specs.append(_edge_module(state, name, entry, warnings))
    return specs


def _edge_desired(manifest: dict[str, Any]) -> dict[str, Any]:
    content = _mapping(manifest.get("modulesContent"), "IoT Edge manifest modulesContent")
    agent = _mapping(content.get("$edgeAgent"), "IoT Edge manifest modulesContent.$edgeAgent")
    return _mapping(agent.get("properties.desired"), '$edgeAgent["properties.desired"]')


def _edge_module(state: DesiredState, name: str, value: Any, warnings: list[str]) -> ModuleSpec:
    where = f"module {name}"
    entry = _mapping(value, where)
    if entry.get("type", "docker") != "docker":
        raise _fail(f"{where} type", f"{str(entry['type'])[:40]!r} is not docker")
    settings = _mapping(entry.get("settings"), f"{where} settings")
    reference, image_id = _image_entry(state, name, where)
    body = join_create_options(settings, f"{where} settings")
    if body.pop("Image", None) is not None:
        warnings.append(f"{where}: createOptions Image is ignored; the signed image is used")
    env = _mapping(entry.get("env", {}), f"{where} env")
    for var, holder in env.items():
        held = _mapping(holder, f"{where} env.{var}")
        _set_env(body, var, _scalar_text(held.get("value"), f"{where} env.{var}.value"))
    policy = _edge_enum(RestartPolicy, entry, "restartPolicy", RestartPolicy.ALWAYS, where)
    _edge_restart(body, policy, where, warnings)
    return ModuleSpec(
        module=name, image=reference, image_id=image_id, create_body=body,
        desired_status=_edge_enum(DesiredStatus, entry, "status", DesiredStatus.RUNNING, where),
        restart_policy=policy, startup_order=_startup_order(entry, where),
    )


_Enum = TypeVar("_Enum", RestartPolicy, DesiredStatus)


def _edge_enum(
    kind: type[_Enum], entry: dict[str, Any], key: str, default: _Enum, where: str
) -> _Enum:
    value = entry.get(key, default.value)
    try:
        return kind(value)
    except ValueError as exc:
        allowed = ", ".join(v.value for v in kind)
        raise _fail(f"{where} {key}", f"{str(value)[:40]!r} is not one of {allowed}") from exc


def _edge_restart(
    body: dict[str, Any], policy: RestartPolicy, where: str, warnings: list[str]
) -> None:
    host = body.setdefault("HostConfig", {})
    if not isinstance(host, dict):
        raise _fail(f"{where} createOptions HostConfig", "must be an object")
    wanted = {"Name": EDGE_ENGINE_RESTART[policy], "MaximumRetryCount": 0}
    given = host.get("RestartPolicy")
    if given not in (None, wanted) and isinstance(given, dict) and given.get("Name"):
        warnings.append(f"{where}: createOptions HostConfig.RestartPolicy is replaced by "
                        f"restartPolicy {policy.value}")
    host["RestartPolicy"] = wanted


def _startup_order(entry: dict[str, Any], where: str) -> int:
    order = entry.get("startupOrder", MAX_STARTUP_ORDER)
    if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= MAX_STARTUP_ORDER:
        raise _fail(f"{where} startupOrder", f"must be an integer 0-{MAX_STARTUP_ORDER}")
    return int(order)


def join_create_options(settings: dict[str, Any], where: str) -> dict[str, Any]:
    """The ContainerCreate body of a module's SETTINGS (a copy; {} when there is none).

    ``createOptions`` is a JSON string (edgeAgent's form) or an object (a template's
    form); a long string is split into ``createOptions``, ``createOptions01``,
    ``createOptions02``, … which are joined in number order before parsing. Numbers
    must follow each other from 01 (edgeAgent's ChunkedProperty rule).

    Raises:
        FormatError: a gap in the chunk numbers, a chunk that is not a string, too many
            chunks, or joined text that is not a JSON object.
    """
    chunks: dict[int, Any] = {}
    for key, value in settings.items():
        match = _CHUNK_KEY.fullmatch(key)
        if match:
            chunks[int(match.group(1)) if match.group(1) else 0] = value
    if not chunks:
        return {}
    if len(chunks) > MAX_CREATE_OPTIONS_CHUNKS:
        raise _fail(f"{where} createOptions", f"more than {MAX_CREATE_OPTIONS_CHUNKS} chunks")
    if sorted(chunks) != list(range(len(chunks))):
        missing = min(set(range(len(chunks))) - set(chunks))
        label = f"createOptions{missing:02d}" if missing else "createOptions"
        raise _fail(f"{where} createOptions", f"chunks are not consecutive: {label} is missing")
    if len(chunks) == 1 and isinstance(chunks[0], dict):
        return copy.deepcopy(chunks[0])
    for number, chunk in chunks.items():
        if not isinstance(chunk, str):
            label = f"createOptions{number:02d}" if number else "createOptions"
            raise _fail(f"{where} {label}", "must be a string when createOptions is split")
    text = "".join(chunks[i] for i in range(len(chunks)))
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise _fail(f"{where} createOptions", f"is not valid JSON ({exc})") from exc
    return _mapping(body, f"{where} createOptions")


def split_create_options(text: str, size: int = CREATE_OPTIONS_CHUNK) -> dict[str, str]:
    """TEXT as edgeAgent stores it: {"createOptions": …, "createOptions01": …, …}."""
    pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
    return {f"createOptions{i:02d}" if i else "createOptions": p for i, p in enumerate(pieces)}


# -- Compose ----------------------------------------------------------------------------

# compose-spec "Services top-level element": the keys mapped here. Each handler puts
# what its key says into the ContainerCreate body.
Handler = Callable[[dict[str, Any], Any, str, list[str]], None]


def _compose_specs(state: DesiredState, warnings: list[str]) -> list[ModuleSpec]:
    services = _mapping(state.manifest.get("services"), "compose manifest services")
    orders = _startup_orders(services)
    specs = []
    for name, value in services.items():
        where = f"service {name}"
        service = _mapping(value, where)
        reference, image_id = _image_entry(state, name, where)
        body: dict[str, Any] = {"HostConfig": {}}
        for key, item in service.items():
            handler = COMPOSE_KEYS.get(key)
            if handler is not None:
                handler(body, item, f"{where} {key}", warnings)
            elif key in IGNORED_COMPOSE_KEYS:
                warnings.append(f"{where}: {key} is ignored ({IGNORED_COMPOSE_KEYS[key]})")
            else:
                warnings.append(f"{where}: {key} is not supported by deltaport and is ignored")
        policy = _compose_restart(body, service.get("restart", "no"), f"{where} restart")
        specs.append(ModuleSpec(
            module=name, image=reference, image_id=image_id, create_body=body,
            restart_policy=policy, startup_order=orders[name],
        ))
    return specs


def _noop(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    """Keys read elsewhere (image: the signed modules list; restart, depends_on)."""


def _argv(value: Any, where: str) -> list[str]:
    """compose-spec "command"/"entrypoint": a string (shell-split) or a list."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise _fail(where, f"cannot be split like a shell would ({exc})") from exc
    return _str_list(value, where)


def _command(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    if value is not None:
        body["Cmd"] = _argv(value, where)


def _entrypoint(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    if value is not None:
        body["Entrypoint"] = _argv(value, where)


def _pairs(value: Any, where: str, warnings: list[str]) -> list[tuple[str, str]]:
    """compose-spec "environment"/"labels": a list of "K=V" or a mapping (None: omitted)."""
    if isinstance(value, dict):
        return [(str(k), _scalar_text(v, f"{where}.{k}")) for k, v in value.items()
                if v is not None]
    pairs = []
    for item in _str_list(value, where):
        key, sep, val = item.partition("=")
        if not key:
            raise _fail(where, f"{item[:60]!r} has no name")
        if sep:
            pairs.append((key, val))
        else:  # "NAME" alone takes the value from the operator's shell: none on a device
            warnings.append(f"{where}: {key} has no value and is omitted")
    return pairs


def _environment(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    for key, val in _pairs(value, where, warnings):
        _set_env(body, key, val)


def _labels(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    body["Labels"] = dict(_pairs(value, where, warnings))


def _env_file(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    raise _fail(where, "is not supported: the device cannot read the operator's files; "
                "put the variables under environment")


def _text_key(docker_key: str, host: bool = False) -> Handler:
    def handler(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise _fail(where, "must be a string")
        (body["HostConfig"] if host else body)[docker_key] = str(value)
    return handler


def _privileged(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    if not isinstance(value, bool):
        raise _fail(where, "must be true or false")
    body["HostConfig"]["Privileged"] = value


def _caps(docker_key: str) -> Handler:
    def handler(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
        body["HostConfig"][docker_key] = _str_list(value, where)
    return handler


def _tmpfs(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    """compose-spec "tmpfs": a path or a list of "path[:options]"."""
    items = [value] if isinstance(value, str) else _str_list(value, where)
    mounts = body["HostConfig"].setdefault("Tmpfs", {})
    for item in items:
        path, _, options = item.partition(":")
        if not path.startswith("/"):
            raise _fail(where, f"{item[:60]!r} must be an absolute path")
        mounts[path] = options


def _stop_grace(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    """compose-spec "stop_grace_period" -> StopTimeout (whole seconds, rounded up)."""
    body["StopTimeout"] = math.ceil(parse_duration(value, where) / NANOSECONDS["s"])


def parse_duration(value: Any, where: str) -> int:
    """A compose-spec duration ("1m30s", "10s", "500ms", "1h") in nanoseconds.

    A bare number is seconds. Raises FormatError for anything else.
    """
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return round(value * NANOSECONDS["s"])
    if not isinstance(value, str) or not value:
        raise _fail(where, f"{str(value)[:40]!r} is not a duration like 1m30s")
    parts = _DURATION_PART.findall(value)
    if "".join(n + u for n, u in parts) != value:
        raise _fail(where, f"{value[:40]!r} is not a duration like 1m30s")
    return round(sum(float(n) * NANOSECONDS[u] for n, u in parts))


HEALTH_DURATIONS = {"interval": "Interval", "timeout": "Timeout",
                    "start_period": "StartPeriod", "start_interval": "StartInterval"}


def _healthcheck(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    """compose-spec "healthcheck" -> Healthcheck (durations in nanoseconds)."""
    spec = _mapping(value, where)
    if spec.get("disable") is True:
        body["Healthcheck"] = {"Test": ["NONE"]}
        return
    check: dict[str, Any] = {}
    if "test" in spec:
        check["Test"] = _health_test(spec["test"], f"{where}.test")
    for key, docker_key in HEALTH_DURATIONS.items():
        if key in spec:
            check[docker_key] = parse_duration(spec[key], f"{where}.{key}")
    if "retries" in spec:
        retries = spec["retries"]
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise _fail(f"{where}.retries", "must be a non-negative integer")
        check["Retries"] = retries
    unknown = set(spec) - {"test", "retries", "disable", *HEALTH_DURATIONS}
    for key in sorted(unknown):
        warnings.append(f"{where}: {key} is not supported and is ignored")
    body["Healthcheck"] = check


def _health_test(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return ["CMD-SHELL", value]
    test = _str_list(value, where)
    if not test or test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise _fail(where, "must start with NONE, CMD or CMD-SHELL")
    if test[0] != "NONE" and len(test) < 2:
        raise _fail(where, f"{test[0]} needs a command")
    return test


def _ports(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    """compose-spec "ports" -> ExposedPorts and HostConfig.PortBindings."""
    if not isinstance(value, list):
        raise _fail(where, "must be a list")
    exposed = body.setdefault("ExposedPorts", {})
    bindings = body["HostConfig"].setdefault("PortBindings", {})
    for item in value:
        for port, binding in parse_port(item, where):
            exposed[port] = {}
            bindings.setdefault(port, []).append(binding)


def parse_port(item: Any, where: str) -> list[tuple[str, dict[str, str]]]:
    """One compose port entry as [("80/tcp", {"HostIp": …, "HostPort": …}), …].

    Short syntax: ``[HOST_IP:][HOST_PORT[-END]:]PORT[-END][/PROTOCOL]`` (an IPv6 host
    in brackets); long syntax: ``{target, published, host_ip, protocol}``. A port
    without a host port is published on an ephemeral one, as Compose does.

    Raises:
        FormatError: not a port, a range of another length, a port out of 1-65535.
    """
    if isinstance(item, dict):
        return [_long_port(item, where)]
    if isinstance(item, int) and not isinstance(item, bool):
        item = str(item)
    if not isinstance(item, str):
        raise _fail(where, f"{str(item)[:40]!r} is not a port")
    body, _, protocol = item.partition("/")
    host_ip, host_part, target = _split_port(body, item, where)
    targets = _port_range(target, item, where)
    hosts: list[int | None] = [None] * len(targets)
    if host_part:
        hosts = list(_port_range(host_part, item, where))
    if len(hosts) != len(targets):
        raise _fail(where, f"{item!r}: host and container ranges differ in length")
    proto = _protocol(protocol or "tcp", item, where)
    return [(f"{t}/{proto}", {"HostIp": host_ip, "HostPort": str(h) if h else ""})
            for h, t in zip(hosts, targets, strict=True)]


def _split_port(body: str, item: str, where: str) -> tuple[str, str, str]:
    """(host ip, host port part, container port part) of the text before "/PROTOCOL"."""
    host_ip = ""
    if body.startswith("["):  # an IPv6 host: [::1]:8080:80
        end = body.find("]")
        if end < 0 or body[end + 1 : end + 2] != ":":
            raise _fail(where, f"{item!r} is not a port")
        host_ip, parts = body[1:end], body[end + 2 :].split(":")
    else:
        parts = body.split(":")
        if len(parts) == 3:
            host_ip = parts.pop(0)
    if len(parts) == 1:
        return host_ip, "", parts[0]
    if len(parts) != 2:
        raise _fail(where, f"{item!r} is not a port")
    return host_ip, parts[0], parts[1]


def _port_range(text: str, item: str, where: str) -> list[int]:
    low, _, high = text.partition("-")
    try:
        start, end = int(low), int(high or low)
    except ValueError as exc:
        raise _fail(where, f"{item!r} is not a port") from exc
    if not 1 <= start <= end <= MAX_PORT:
        raise _fail(where, f"{item!r}: ports must be 1-{MAX_PORT}")
    return list(range(start, end + 1))


def _protocol(value: Any, item: Any, where: str) -> str:
    if value not in ("tcp", "udp", "sctp"):
        raise _fail(where, f"{str(item)[:40]!r}: protocol must be tcp, udp or sctp")
    return str(value)


def _long_port(item: dict[str, Any], where: str) -> tuple[str, dict[str, str]]:
    target = item.get("target")
    if isinstance(target, bool) or not isinstance(target, int) or not 1 <= target <= MAX_PORT:
        raise _fail(f"{where}.target", f"must be a port 1-{MAX_PORT}")
    published = item.get("published", "")
    if published != "":
        _port_range(str(published), str(published), f"{where}.published")
    proto = _protocol(item.get("protocol", "tcp"), item, where)
    return f"{target}/{proto}", {"HostIp": str(item.get("host_ip", "")),
                                 "HostPort": str(published)}


def _volumes(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    """compose-spec "volumes" -> HostConfig.Binds (host paths) and .Mounts (volumes).

    Binds, like ``docker run -v``, create a missing host directory; a named volume is
    created by the engine on first use.
    """
    if not isinstance(value, list):
        raise _fail(where, "must be a list")
    host = body["HostConfig"]
    for item in value:
        bind, mount = parse_volume(item, where)
        if bind is not None:
            host.setdefault("Binds", []).append(bind)
        if mount is not None:
            host.setdefault("Mounts", []).append(mount)


def parse_volume(item: Any, where: str) -> tuple[str | None, dict[str, Any] | None]:
    """One compose volume entry: (a Binds string, None) or (None, a Mounts entry).

    Short syntax ``SOURCE:TARGET[:MODE]`` or ``TARGET`` (an anonymous volume); SOURCE
    starting with ``/`` is a host path, with ``.`` or ``~`` it is refused (relative to
    the operator's project folder, which the device does not have), else a named
    volume. Long syntax: ``{type: bind|volume|tmpfs, source, target, read_only}``.

    Raises:
        FormatError: a relative host path, a relative target, an unknown type.
    """
    if isinstance(item, dict):
        return _long_volume(item, where)
    if not isinstance(item, str) or not item:
        raise _fail(where, f"{str(item)[:40]!r} is not a volume")
    parts = item.split(":")
    if len(parts) == 1:
        return None, _mount("volume", "", _target(parts[0], item, where), False)
    if len(parts) > 3:
        raise _fail(where, f"{item!r} is not SOURCE:TARGET[:MODE]")
    source, target = parts[0], _target(parts[1], item, where)
    modes = parts[2].split(",") if len(parts) == 3 else []
    return _source_mount(source, target, modes, item, where)


def _source_mount(source: str, target: str, modes: list[str], item: str,
                  where: str) -> tuple[str | None, dict[str, Any] | None]:
    if source.startswith((".", "~")):
        raise _fail(where, f"{item!r}: a relative host path cannot be used on a device; "
                    "use an absolute path or a named volume")
    if source.startswith("/"):
        return ":".join([source, target, *([",".join(modes)] if modes else [])]), None
    return None, _mount("volume", source, target, "ro" in modes)


def _target(text: str, item: str, where: str) -> str:
    if not text.startswith("/"):
        raise _fail(where, f"{item!r}: the container path must be absolute")
    return text


def _mount(kind: str, source: str, target: str, read_only: bool) -> dict[str, Any]:
    mount: dict[str, Any] = {"Type": kind, "Target": target, "ReadOnly": read_only}
    if source:
        mount["Source"] = source
    return mount


def _long_volume(item: dict[str, Any], where: str) -> tuple[str | None, dict[str, Any] | None]:
    kind = item.get("type", "volume")
    target = item.get("target")
    if not isinstance(target, str):
        raise _fail(f"{where}.target", "must be a container path")
    target = _target(target, target, where)
    source = item.get("source", "")
    if not isinstance(source, str):
        raise _fail(f"{where}.source", "must be a string")
    read_only = item.get("read_only", False) is True
    if kind == "bind":
        if not source.startswith("/"):
            raise _fail(f"{where}.source", f"{source!r}: a bind needs an absolute host path")
        return _source_mount(source, target, ["ro"] if read_only else [], source, where)
    if kind == "volume":
        return None, _mount("volume", source, target, read_only)
    if kind == "tmpfs":
        return None, _mount("tmpfs", "", target, False)
    raise _fail(f"{where}.type", f"{str(kind)[:40]!r} is not bind, volume or tmpfs")


COMPOSE_RESTART = {"no": RestartPolicy.NEVER, "always": RestartPolicy.ALWAYS,
                   "unless-stopped": RestartPolicy.ALWAYS, "on-failure": RestartPolicy.ON_FAILURE}


def _compose_restart(body: dict[str, Any], value: Any, where: str) -> RestartPolicy:
    """compose-spec "restart": no | always | on-failure[:N] | unless-stopped."""
    text = str(value) if isinstance(value, str) else ""
    name, _, count = text.partition(":")
    if name not in COMPOSE_RESTART or (count and name != "on-failure"):
        raise _fail(where, f"{str(value)[:40]!r} is not no, always, on-failure[:N] or "
                    "unless-stopped")
    if count and not count.isdigit():
        raise _fail(where, f"{text!r}: the retry count must be a number")
    body["HostConfig"]["RestartPolicy"] = {"Name": name, "MaximumRetryCount": int(count or 0)}
    return COMPOSE_RESTART[name]


def _depends(service: dict[str, Any], where: str, names: Mapping[str, Any]) -> list[str]:
    """compose-spec "depends_on": a list of names, or a mapping name -> {condition}."""
    value = service.get("depends_on", [])
    deps = list(_mapping(value, where)) if isinstance(value, dict) else _str_list(value, where)
    for dep in deps:
        if dep not in names:
            raise _fail(where, f"names {dep!r}, which is not a service")
    return deps


def _startup_orders(services: dict[str, Any]) -> dict[str, int]:
    """Each service's place in a dependency-first order (ties: by name).

    Raises:
        FormatError: depends_on has a cycle (the message names its services).
    """
    deps = {name: _depends(_mapping(svc, f"service {name}"), f"service {name} depends_on",
                           services) for name, svc in services.items()}
    waiting = {name: len(set(d)) for name, d in deps.items()}
    dependants: dict[str, list[str]] = {name: [] for name in services}
    for name, ds in deps.items():
        for dep in set(ds):
            dependants[dep].append(name)
    ready = [name for name, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: dict[str, int] = {}
    while ready:
        name = heapq.heappop(ready)
        order[name] = len(order)
        for other in dependants[name]:
            waiting[other] -= 1
            if waiting[other] == 0:
                heapq.heappush(ready, other)
    if len(order) != len(services):
        cycle = sorted(set(services) - set(order))
        raise FormatError(f"services {', '.join(cycle)}: depends_on has a cycle")
    return order


def _depends_warnings(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    """depends_on orders startup (see _startup_orders); conditions are not waited for."""
    if isinstance(value, dict):
        for dep, cond in value.items():
            condition = cond.get("condition") if isinstance(cond, dict) else None
            if condition not in (None, "service_started"):
                warnings.append(f"{where}: {dep} condition {condition} is not waited for; "
                                "services start in dependency order")


COMPOSE_KEYS: dict[str, Handler] = {
    "image": _noop,  # the image is the signed modules entry, pinned by image ID
    "restart": _noop,  # read by _compose_restart
    "depends_on": _depends_warnings,
    "command": _command,
    "entrypoint": _entrypoint,
    "environment": _environment,
    "env_file": _env_file,
    "labels": _labels,
    "volumes": _volumes,
    "ports": _ports,
    "healthcheck": _healthcheck,
    "user": _text_key("User"),
    "working_dir": _text_key("WorkingDir"),
    "hostname": _text_key("Hostname"),
    "stop_signal": _text_key("StopSignal"),
    "network_mode": _text_key("NetworkMode", host=True),
    "privileged": _privileged,
    "cap_add": _caps("CapAdd"),
    "cap_drop": _caps("CapDrop"),
    "tmpfs": _tmpfs,
    "stop_grace_period": _stop_grace,
}
IGNORED_COMPOSE_KEYS = {
    "build": "devices run the signed image; nothing is built on them",
    "container_name": "deltaport names containers <module>.v<version>",
    "pull_policy": "images come from the local registry by digest",
}
