"""What both manifest kinds share on the way to ModuleSpecs: checked reads of a document,
the signed image of a module, the result. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from deltaport.agent.runtime.model import ModuleSpec
from deltaport.desired import DesiredState
from deltaport.errors import FormatError


@dataclass(frozen=True)
class SpecSet:
    """The containers of one desired manifest, in startup order, and what was dropped."""

    modules: tuple[ModuleSpec, ...]
    warnings: tuple[str, ...]


def fail(where: str, message: str) -> FormatError:
    return FormatError(f"{where}: {message}")


def mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fail(where, f"must be an object, not {type(value).__name__}")
    return value


def str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(where, "must be a list of strings")
    return list(value)


def scalar_text(value: Any, where: str) -> str:
    """A JSON scalar as an environment/label value: strings as they are, true -> "true"."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise fail(where, f"must be a string or number, not {type(value).__name__}")


def image_entry(state: DesiredState, module: str, where: str) -> tuple[str, str]:
    try:
        entry = state.image_of(module)
    except KeyError as exc:
        raise fail(where, "is not in the signed modules list (no image for it)") from exc
    return entry.reference, entry.image_id


def set_env(body: dict[str, Any], name: str, value: str) -> None:
    """Put NAME=VALUE into body["Env"], replacing an entry of the same name."""
    env = [e for e in body.get("Env") or [] if e.split("=", 1)[0] != name]
    env.append(f"{name}={value}")
    body["Env"] = env
