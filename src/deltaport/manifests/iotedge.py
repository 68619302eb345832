"""Azure IoT Edge deployments as iotedgedev ``genconfig`` and edgeAgent read them.

- A template (``deployment.template.json``) has placeholders that iotedgedev expands
  in the *text*, before JSON parsing: ``${VAR}`` and ``$VAR``, so ``"ttl": ${TTL}``
  is valid once expanded. ``${MODULES.name}`` (``.platform``, ``.debug``) and
  ``${MODULEDIR<./path>.platform}`` name the image iotedgedev builds for a module
  folder: accepted through ``--var``, otherwise
  the template must be generated first (``iotedgedev genconfig``). An unbraced
  ``$name`` with no value is left as written: ``$edgeAgent``, ``$edgeHub`` and
  ``$upstream`` are IoT Edge's own.
- The modules are ``modulesContent.$edgeAgent["properties.desired"]`` (or nested
  ``properties.desired``) ``.systemModules`` and ``.modules``; a layered deployment
  names them as path keys ``properties.desired.modules.NAME``; the Azure CLI / REST
  form wraps the whole in ``{"content": {"modulesContent": ...}}``.
- What a device gets is a deployment, not a template: ``$schema-template`` removed,
  every ``createOptions`` a JSON string, split into ``createOptions01`` … past
  :data:`CREATE_OPTIONS_CHUNK` characters as edgeAgent reads it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from deltaport.errors import FormatError
from deltaport.manifests.model import Locate, Manifest, ModuleImage
from deltaport.manifests.reference import parse_image

CREATE_OPTIONS_CHUNK = 512  # characters per createOptions field (edgeAgent)
CREATE_OPTIONS_MAX_CHUNKS = 8  # createOptions, createOptions01 … createOptions07
SCHEMA_TEMPLATE_KEY = "$schema-template"
EDGE_AGENT = "$edgeAgent"
CONTENT_KEYS = ("modulesContent", "moduleContent")
MODULES_PREFIX = "MODULES."
_LAYERED = re.compile(r"^properties\.desired\.(systemModules|modules)\.(.+)$")
REGISTRY_CREDENTIALS = "registryCredentials"
_LAYERED_CREDENTIALS = re.compile(
    r"^properties\.desired\.runtime\.settings\.registryCredentials(\..+)?$")
MODULEDIR_PREFIX = "MODULEDIR<"  # ${MODULEDIR<./path/to/module>.platform}: a module folder
_PLACEHOLDER = re.compile(
    r"\$\{([A-Za-z_][A-Za-z0-9_.\-]*|MODULEDIR<[^<>{}\"]*>[A-Za-z0-9_.\-]*)\}"
    r"|\$([A-Za-z_][A-Za-z0-9_]*)"
)


def looks_like_iotedge(text: str) -> bool:
    """Whether TEXT is JSON naming modulesContent (checked before expanding it)."""
    return text.lstrip().startswith("{") and any(f'"{k}"' in text for k in CONTENT_KEYS)


def expand_template(text: str, variables: Mapping[str, str], name: str) -> str:
    """TEXT with iotedgedev's placeholders replaced.

    Raises:
        FormatError: a ``${VAR}`` with no value; all missing names are listed.
    """
    missing: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        braced, bare = match.group(1), match.group(2)
        var = braced or bare
        if var in variables:
            return variables[var]
        if braced:
            missing.add(var)
        return match.group(0)

    out = _PLACEHOLDER.sub(replace, text)
    if missing:
        names = ", ".join("${" + v + "}" for v in sorted(missing))
        hint = "give --var NAME=VALUE, an --env-file, or --from-env"
        if any(v.startswith((MODULES_PREFIX, MODULEDIR_PREFIX)) for v in missing):
            hint = (
                "${MODULES.*} and ${MODULEDIR<path>.*} are filled in by iotedgedev: generate "
                "the deployment first (iotedgedev genconfig) or give --var MODULES.name=IMAGE"
            )
        raise FormatError(f"{name}: no value for {names} ({hint})")
    return out


def unwrap(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The object holding modulesContent, or None if DOC is not an IoT Edge deployment."""
    if any(k in doc for k in CONTENT_KEYS):
        return doc
    content = doc.get("content")
    if isinstance(content, dict) and any(k in content for k in CONTENT_KEYS):
        return content
    return None


def _agent(doc: dict[str, Any], name: str) -> dict[str, Any]:
    holder = unwrap(doc) or {}
    content = next((holder[k] for k in CONTENT_KEYS if k in holder), None)
    agent = content.get(EDGE_AGENT) if isinstance(content, dict) else None
    if not isinstance(agent, dict):
        raise FormatError(f"{name}: missing modulesContent.$edgeAgent")
    return agent


def _module_specs(agent: dict[str, Any], name: str) -> Iterator[tuple[str, str, Any]]:
    """(where, module, spec) of every module, full or layered."""
    desired = agent.get("properties.desired")
    if desired is None and isinstance(agent.get("properties"), dict):
        desired = agent["properties"].get("desired")
    layered = [(k, _LAYERED.match(k)) for k in agent]
    if desired is None and not any(m for _, m in layered):
        raise FormatError(f"{name}: missing modulesContent.$edgeAgent.properties.desired")
    if desired is not None:
        if not isinstance(desired, dict):
            raise FormatError(f"{name}: $edgeAgent.properties.desired must be an object")
        for section in ("systemModules", "modules"):
            modules = desired.get(section, {})
            if not isinstance(modules, dict):
                raise FormatError(f"{name}: desired.{section} must be an object")
            for module, spec in modules.items():
                yield f"desired.{section}.{module}", module, spec
    for key, match in layered:
        if match:
            yield key, match.group(2), agent[key]


def iotedge_modules(doc: dict[str, Any], name: str) -> tuple[ModuleImage, ...]:
    """(module, image) for every system and user module.

    Raises:
        FormatError: no $edgeAgent desired properties, a module without settings or
            image, an invalid or ``$upstream`` image, or no modules at all.
    """
    found = []
    for where, module, spec in _module_specs(_agent(doc, name), name):
        settings = spec.get("settings") if isinstance(spec, dict) else None
        if not isinstance(settings, dict):
            raise FormatError(f"{name}: {where} has no settings object")
        image = settings.get("image")
        if not isinstance(image, str) or not image.strip():
            raise FormatError(f"{name}: {where} has no image")
        parse_image(image, f"{name}: {where}")
        found.append(ModuleImage(module, image.strip()))
    if not found:
        raise FormatError(f"{name}: the deployment names no modules")
    return tuple(found)


def rewrite_iotedge(manifest: Manifest, locate: Locate) -> dict[str, Any]:
    """The deployment a device gets: local images, createOptions as edgeAgent reads them.

    LOCATE gives the device's reference for a manifest's image reference.
    """
    doc = copy.deepcopy(manifest.document)
    _drop_schema_template(doc)
    agent = _agent(doc, "manifest")
    for where, _, spec in _module_specs(agent, "manifest"):
        settings = spec["settings"]
        settings["image"] = locate(settings["image"])
        _split_create_options(settings, where)
    _drop_registry_credentials(agent)
    return doc


def _drop_registry_credentials(agent: dict[str, Any]) -> None:
    """No cloud registry credentials on the device: it pulls only from its own registry.

    ``runtime.settings.registryCredentials`` name the registries edgeAgent logs in to
    before a pull; every image now comes from the device registry, which needs no login
    (docs/manifests.md), so the map is emptied (kept, for edgeAgent's schema) and a
    layered deployment's ``properties.desired.runtime.settings.registryCredentials.*``
    keys go: the secrets the template held never leave the hub.
    """
    desired = agent.get("properties.desired")
    if desired is None and isinstance(agent.get("properties"), dict):
        desired = agent["properties"].get("desired")
    runtime = desired.get("runtime") if isinstance(desired, dict) else None
    settings = runtime.get("settings") if isinstance(runtime, dict) else None
    if isinstance(settings, dict) and REGISTRY_CREDENTIALS in settings:
        settings[REGISTRY_CREDENTIALS] = {}
    for key in [k for k in agent if _LAYERED_CREDENTIALS.match(k)]:
        del agent[key]


def _drop_schema_template(node: Any) -> None:
    if isinstance(node, dict):
        node.pop(SCHEMA_TEMPLATE_KEY, None)
        for value in node.values():
            _drop_schema_template(value)
    elif isinstance(node, list):
        for value in node:
            _drop_schema_template(value)


def chunk_key(index: int) -> str:
    """``createOptions`` for the first chunk, ``createOptions01`` … after it."""
    return "createOptions" if index == 0 else f"createOptions{index:02d}"


def _split_create_options(settings: dict[str, Any], where: str) -> None:
    options = settings.get("createOptions")
    if options is None:
        return
    if not isinstance(options, str):
        options = json.dumps(options, separators=(",", ":"))
    elif not any(chunk_key(i) in settings for i in range(1, CREATE_OPTIONS_MAX_CHUNKS)):
        pass
    else:
        return  # already split by the author: edgeAgent joins the chunks itself
    chunks = [
        options[i : i + CREATE_OPTIONS_CHUNK] for i in range(0, len(options), CREATE_OPTIONS_CHUNK)
    ] or [""]
    if len(chunks) > CREATE_OPTIONS_MAX_CHUNKS:
        raise FormatError(
            f"{where}: createOptions longer than "
            f"{CREATE_OPTIONS_CHUNK * CREATE_OPTIONS_MAX_CHUNKS} characters"
        )
    for index, chunk in enumerate(chunks):
        settings[chunk_key(index)] = chunk
