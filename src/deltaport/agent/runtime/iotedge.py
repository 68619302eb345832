"""IoT Edge modules (``modulesContent.$edgeAgent[\"properties.desired\"]``) as ModuleSpecs:
createOptions joined from their 512-character chunks as edgeAgent does, env, restart
policy, desired status and startup order. Pure."""

from __future__ import annotations

import copy
import json
import re
from typing import Any, TypeVar

from deltaport.agent.runtime.model import DesiredStatus, ModuleSpec, RestartPolicy
from deltaport.agent.runtime.specparse import (
    fail,
    image_entry,
    mapping,
    scalar_text,
    set_env,
)
from deltaport.desired import DesiredState

CREATE_OPTIONS_CHUNK = 512  # characters per createOptions chunk, as edgeAgent writes them
MAX_CREATE_OPTIONS_CHUNKS = 100  # createOptions, createOptions01 … createOptions99
MAX_STARTUP_ORDER = 4294967295  # IoT Edge: uint32, the default (starts last)
EDGE_SYSTEM_MODULES = frozenset({"edgeAgent", "edgeHub"})
_CHUNK_KEY = re.compile(r"createOptions(\d*)")
# IoT Edge restartPolicy -> the engine's HostConfig.RestartPolicy.Name. on-unhealthy:
# the engine restarts on exit ("always"); restarting on *unhealthy* is the agent's job
# (engines never restart a container for failing its healthcheck).
EDGE_ENGINE_RESTART = {
    RestartPolicy.NEVER: "no",
    RestartPolicy.ON_FAILURE: "on-failure",
    RestartPolicy.ON_UNHEALTHY: "always",
    RestartPolicy.ALWAYS: "always",
}


def iotedge_specs(state: DesiredState, warnings: list[str]) -> list[ModuleSpec]:
    desired = _edge_desired(state.manifest)
    specs: list[ModuleSpec] = []
    system = mapping(desired.get("systemModules", {}), "$edgeAgent systemModules")
    for name in system:
        if name in EDGE_SYSTEM_MODULES:
            warnings.append(f"system module {name} is skipped: deltaport is the device agent")
        else:
            specs.append(_edge_module(state, name, system[name], warnings))
    modules = mapping(desired.get("modules", {}), "$edgeAgent modules")
    for name, entry in modules.items():
        specs.append(_edge_module(state, name, entry, warnings))
    return specs


def _edge_desired(manifest: dict[str, Any]) -> dict[str, Any]:
    content = mapping(manifest.get("modulesContent"), "IoT Edge manifest modulesContent")
    agent = mapping(content.get("$edgeAgent"), "IoT Edge manifest modulesContent.$edgeAgent")
    return mapping(agent.get("properties.desired"), '$edgeAgent["properties.desired"]')


def _edge_module(state: DesiredState, name: str, value: Any, warnings: list[str]) -> ModuleSpec:
    where = f"module {name}"
    entry = mapping(value, where)
    if entry.get("type", "docker") != "docker":
        raise fail(f"{where} type", f"{str(entry['type'])[:40]!r} is not docker")
    settings = mapping(entry.get("settings"), f"{where} settings")
    reference, image_id = image_entry(state, name, where)
    body = join_create_options(settings, f"{where} settings")
    if body.pop("Image", None) is not None:
        warnings.append(f"{where}: createOptions Image is ignored; the signed image is used")
    env = mapping(entry.get("env", {}), f"{where} env")
    for var, holder in env.items():
        held = mapping(holder, f"{where} env.{var}")
        set_env(body, var, scalar_text(held.get("value"), f"{where} env.{var}.value"))
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
        raise fail(f"{where} {key}", f"{str(value)[:40]!r} is not one of {allowed}") from exc


def _edge_restart(
    body: dict[str, Any], policy: RestartPolicy, where: str, warnings: list[str]
) -> None:
    host = body.setdefault("HostConfig", {})
    if not isinstance(host, dict):
        raise fail(f"{where} createOptions HostConfig", "must be an object")
    wanted = {"Name": EDGE_ENGINE_RESTART[policy], "MaximumRetryCount": 0}
    given = host.get("RestartPolicy")
    if given not in (None, wanted) and isinstance(given, dict) and given.get("Name"):
        warnings.append(f"{where}: createOptions HostConfig.RestartPolicy is replaced by "
                        f"restartPolicy {policy.value}")
    host["RestartPolicy"] = wanted


def _startup_order(entry: dict[str, Any], where: str) -> int:
    order = entry.get("startupOrder", MAX_STARTUP_ORDER)
    if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= MAX_STARTUP_ORDER:
        raise fail(f"{where} startupOrder", f"must be an integer 0-{MAX_STARTUP_ORDER}")
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
        raise fail(f"{where} createOptions", f"more than {MAX_CREATE_OPTIONS_CHUNKS} chunks")
    if sorted(chunks) != list(range(len(chunks))):
        missing = min(set(range(len(chunks))) - set(chunks))
        label = f"createOptions{missing:02d}" if missing else "createOptions"
        raise fail(f"{where} createOptions", f"chunks are not consecutive: {label} is missing")
    if len(chunks) == 1 and isinstance(chunks[0], dict):
        return copy.deepcopy(chunks[0])
    for number, chunk in chunks.items():
        if not isinstance(chunk, str):
            label = f"createOptions{number:02d}" if number else "createOptions"
            raise fail(f"{where} {label}", "must be a string when createOptions is split")
    text = "".join(chunks[i] for i in range(len(chunks)))
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise fail(f"{where} createOptions", f"is not valid JSON ({exc})") from exc
    return mapping(body, f"{where} createOptions")


def split_create_options(text: str, size: int = CREATE_OPTIONS_CHUNK) -> dict[str, str]:
    """TEXT as edgeAgent stores it: {"createOptions": …, "createOptions01": …, …}."""
    pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
    return {f"createOptions{i:02d}" if i else "createOptions": p for i, p in enumerate(pieces)}
