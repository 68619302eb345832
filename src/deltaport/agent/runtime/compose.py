"""Compose services as ModuleSpecs: the compose-spec keys devices rely on, mapped onto a
ContainerCreate body; the rest reported as warnings. Pure."""

from __future__ import annotations

import heapq
import math
import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from deltaport.agent.runtime.model import ModuleSpec, RestartPolicy
from deltaport.agent.runtime.specparse import (
    fail,
    image_entry,
    mapping,
    scalar_text,
    set_env,
    str_list,
)
from deltaport.desired import DesiredState
from deltaport.errors import FormatError

NANOSECONDS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
               "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
MAX_PORT = 65535


# compose-spec "Services top-level element": the keys mapped here. Each handler puts
# what its key says into the ContainerCreate body.
Handler = Callable[[dict[str, Any], Any, str, list[str]], None]


def compose_specs(state: DesiredState, warnings: list[str]) -> list[ModuleSpec]:
    services = mapping(state.manifest.get("services"), "compose manifest services")
    orders = _startup_orders(services)
    specs = []
    for name, value in services.items():
        where = f"service {name}"
        service = mapping(value, where)
        reference, image_id = image_entry(state, name, where)
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
            raise fail(where, f"cannot be split like a shell would ({exc})") from exc
    return str_list(value, where)


def _command(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    if value is not None:
        body["Cmd"] = _argv(value, where)


def _entrypoint(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    if value is not None:
        body["Entrypoint"] = _argv(value, where)


def _pairs(value: Any, where: str, warnings: list[str]) -> list[tuple[str, str]]:
    """compose-spec "environment"/"labels": a list of "K=V" or a mapping (None: omitted)."""
    if isinstance(value, dict):
        return [(str(k), scalar_text(v, f"{where}.{k}")) for k, v in value.items()
                if v is not None]
    pairs = []
    for item in str_list(value, where):
        key, sep, val = item.partition("=")
        if not key:
            raise fail(where, f"{item[:60]!r} has no name")
        if sep:
            pairs.append((key, val))
        else:  # "NAME" alone takes the value from the operator's shell: none on a device
            warnings.append(f"{where}: {key} has no value and is omitted")
    return pairs


def _environment(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    for key, val in _pairs(value, where, warnings):
        set_env(body, key, val)


def _labels(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    body["Labels"] = dict(_pairs(value, where, warnings))


def _env_file(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    raise fail(where, "is not supported: the device cannot read the operator's files; "
                "put the variables under environment")


def _text_key(docker_key: str, host: bool = False) -> Handler:
    def handler(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise fail(where, "must be a string")
        (body["HostConfig"] if host else body)[docker_key] = str(value)
    return handler


def _privileged(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    if not isinstance(value, bool):
        raise fail(where, "must be true or false")
    body["HostConfig"]["Privileged"] = value


def _caps(docker_key: str) -> Handler:
    def handler(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
        body["HostConfig"][docker_key] = str_list(value, where)
    return handler


def _tmpfs(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    """compose-spec "tmpfs": a path or a list of "path[:options]"."""
    items = [value] if isinstance(value, str) else str_list(value, where)
    mounts = body["HostConfig"].setdefault("Tmpfs", {})
    for item in items:
        path, _, options = item.partition(":")
        if not path.startswith("/"):
            raise fail(where, f"{item[:60]!r} must be an absolute path")
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
        raise fail(where, f"{str(value)[:40]!r} is not a duration like 1m30s")
    parts = _DURATION_PART.findall(value)
    if "".join(n + u for n, u in parts) != value:
        raise fail(where, f"{value[:40]!r} is not a duration like 1m30s")
    return round(sum(float(n) * NANOSECONDS[u] for n, u in parts))


HEALTH_DURATIONS = {"interval": "Interval", "timeout": "Timeout",
                    "start_period": "StartPeriod", "start_interval": "StartInterval"}


def _healthcheck(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    """compose-spec "healthcheck" -> Healthcheck (durations in nanoseconds)."""
    spec = mapping(value, where)
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
            raise fail(f"{where}.retries", "must be a non-negative integer")
        check["Retries"] = retries
    unknown = set(spec) - {"test", "retries", "disable", *HEALTH_DURATIONS}
    for key in sorted(unknown):
        warnings.append(f"{where}: {key} is not supported and is ignored")
    body["Healthcheck"] = check


def _health_test(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return ["CMD-SHELL", value]
    test = str_list(value, where)
    if not test or test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise fail(where, "must start with NONE, CMD or CMD-SHELL")
    if test[0] != "NONE" and len(test) < 2:
        raise fail(where, f"{test[0]} needs a command")
    return test


def _ports(body: dict[str, Any], value: Any, where: str, warnings: list[str]) -> None:
    """compose-spec "ports" -> ExposedPorts and HostConfig.PortBindings."""
    if not isinstance(value, list):
        raise fail(where, "must be a list")
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
        raise fail(where, f"{str(item)[:40]!r} is not a port")
    body, _, protocol = item.partition("/")
    host_ip, host_part, target = _split_port(body, item, where)
    targets = _port_range(target, item, where)
    hosts: list[int | None] = [None] * len(targets)
    if host_part:
        hosts = list(_port_range(host_part, item, where))
    if len(hosts) != len(targets):
        raise fail(where, f"{item!r}: host and container ranges differ in length")
    proto = _protocol(protocol or "tcp", item, where)
    return [(f"{t}/{proto}", {"HostIp": host_ip, "HostPort": str(h) if h else ""})
            for h, t in zip(hosts, targets, strict=True)]


def _split_port(body: str, item: str, where: str) -> tuple[str, str, str]:
    """(host ip, host port part, container port part) of the text before "/PROTOCOL"."""
    host_ip = ""
    if body.startswith("["):  # an IPv6 host: [::1]:8080:80
        end = body.find("]")
        if end < 0 or body[end + 1 : end + 2] != ":":
            raise fail(where, f"{item!r} is not a port")
        host_ip, parts = body[1:end], body[end + 2 :].split(":")
    else:
        parts = body.split(":")
        if len(parts) == 3:
            host_ip = parts.pop(0)
    if len(parts) == 1:
        return host_ip, "", parts[0]
    if len(parts) != 2:
        raise fail(where, f"{item!r} is not a port")
    return host_ip, parts[0], parts[1]


def _port_range(text: str, item: str, where: str) -> list[int]:
    low, _, high = text.partition("-")
    try:
        start, end = int(low), int(high or low)
    except ValueError as exc:
        raise fail(where, f"{item!r} is not a port") from exc
    if not 1 <= start <= end <= MAX_PORT:
        raise fail(where, f"{item!r}: ports must be 1-{MAX_PORT}")
    return list(range(start, end + 1))


def _protocol(value: Any, item: Any, where: str) -> str:
    if value not in ("tcp", "udp", "sctp"):
        raise fail(where, f"{str(item)[:40]!r}: protocol must be tcp, udp or sctp")
    return str(value)


def _long_port(item: dict[str, Any], where: str) -> tuple[str, dict[str, str]]:
    target = item.get("target")
    if isinstance(target, bool) or not isinstance(target, int) or not 1 <= target <= MAX_PORT:
        raise fail(f"{where}.target", f"must be a port 1-{MAX_PORT}")
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
        raise fail(where, "must be a list")
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
        raise fail(where, f"{str(item)[:40]!r} is not a volume")
    parts = item.split(":")
    if len(parts) == 1:
        return None, _mount("volume", "", _target(parts[0], item, where), False)
    if len(parts) > 3:
        raise fail(where, f"{item!r} is not SOURCE:TARGET[:MODE]")
    source, target = parts[0], _target(parts[1], item, where)
    modes = parts[2].split(",") if len(parts) == 3 else []
    return _source_mount(source, target, modes, item, where)


def _source_mount(source: str, target: str, modes: list[str], item: str,
                  where: str) -> tuple[str | None, dict[str, Any] | None]:
    if source.startswith((".", "~")):
        raise fail(where, f"{item!r}: a relative host path cannot be used on a device; "
                    "use an absolute path or a named volume")
    if source.startswith("/"):
        return ":".join([source, target, *([",".join(modes)] if modes else [])]), None
    return None, _mount("volume", source, target, "ro" in modes)


def _target(text: str, item: str, where: str) -> str:
    if not text.startswith("/"):
        raise fail(where, f"{item!r}: the container path must be absolute")
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
        raise fail(f"{where}.target", "must be a container path")
    target = _target(target, target, where)
    source = item.get("source", "")
    if not isinstance(source, str):
        raise fail(f"{where}.source", "must be a string")
    read_only = item.get("read_only", False) is True
    if kind == "bind":
        if not source.startswith("/"):
            raise fail(f"{where}.source", f"{source!r}: a bind needs an absolute host path")
        return _source_mount(source, target, ["ro"] if read_only else [], source, where)
    if kind == "volume":
        return None, _mount("volume", source, target, read_only)
    if kind == "tmpfs":
        return None, _mount("tmpfs", "", target, False)
    raise fail(f"{where}.type", f"{str(kind)[:40]!r} is not bind, volume or tmpfs")


COMPOSE_RESTART = {"no": RestartPolicy.NEVER, "always": RestartPolicy.ALWAYS,
                   "unless-stopped": RestartPolicy.ALWAYS, "on-failure": RestartPolicy.ON_FAILURE}


def _compose_restart(body: dict[str, Any], value: Any, where: str) -> RestartPolicy:
    """compose-spec "restart": no | always | on-failure[:N] | unless-stopped."""
    text = str(value) if isinstance(value, str) else ""
    name, _, count = text.partition(":")
    if name not in COMPOSE_RESTART or (count and name != "on-failure"):
        raise fail(where, f"{str(value)[:40]!r} is not no, always, on-failure[:N] or "
                    "unless-stopped")
    if count and not count.isdigit():
        raise fail(where, f"{text!r}: the retry count must be a number")
    body["HostConfig"]["RestartPolicy"] = {"Name": name, "MaximumRetryCount": int(count or 0)}
    return COMPOSE_RESTART[name]


def _depends(service: dict[str, Any], where: str, names: Mapping[str, Any]) -> list[str]:
    """compose-spec "depends_on": a list of names, or a mapping name -> {condition}."""
    value = service.get("depends_on", [])
    deps = list(mapping(value, where)) if isinstance(value, dict) else str_list(value, where)
    for dep in deps:
        if dep not in names:
            raise fail(where, f"names {dep!r}, which is not a service")
    return deps


def _startup_orders(services: dict[str, Any]) -> dict[str, int]:
    """Each service's place in a dependency-first order (ties: by name).

    Raises:
        FormatError: depends_on has a cycle (the message names its services).
    """
    deps = {name: _depends(mapping(svc, f"service {name}"), f"service {name} depends_on",
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
