"""Deployment manifests: which images a deployment needs, and their device-local rewrite.

Two formats, the ones edge operators already write:

- Azure IoT Edge ``deployment.json`` / ``deployment.template.json``: images at
  ``modulesContent.$edgeAgent.properties.desired.{systemModules,modules}.*.settings.image``,
  with ``${VAR}`` placeholders resolved from given variables (``--var``) then the
  environment. (Templates may also name ``$edgeAgent`` under ``moduleContent``.)
- Docker Compose: ``services.*.image``.

Pure: bytes in, :class:`Manifest` out, :class:`~deltaport.errors.FormatError` naming
the problem for anything malformed.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from deltaport.errors import FormatError

MANIFEST_MAX_BYTES = 4 * 1024 * 1024  # deployment manifests are small documents
REFERENCE_MAX_CHARS = 500
KIND_IOTEDGE = "iotedge"
KIND_COMPOSE = "compose"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")


@dataclass(frozen=True)
class ModuleImage:
    """One image the manifest needs, and where in the manifest it is used."""

    module: str  # IoT Edge module name or Compose service name
    reference: str  # resolved image reference, e.g. "myacr.azurecr.io/app:1.0"


@dataclass(frozen=True)
class Manifest:
    """A parsed, variable-resolved deployment manifest."""

    kind: str  # KIND_IOTEDGE | KIND_COMPOSE
    document: dict[str, Any]  # resolved document (placeholders substituted)
    modules: tuple[ModuleImage, ...]

    @property
    def references(self) -> tuple[str, ...]:
        """Distinct image references, in manifest order."""
        return tuple(dict.fromkeys(m.reference for m in self.modules))


def parse_manifest(
    data: bytes, variables: Mapping[str, str] | None = None, name: str = "manifest"
) -> Manifest:
    """Parse an IoT Edge or Compose manifest; NAME is used in error messages.

    Raises:
        FormatError: too large, not JSON/YAML, neither format, an image missing or
            invalid, or a ``${VAR}`` with no value.
    """
    if len(data) > MANIFEST_MAX_BYTES:
        raise FormatError(f"{name}: larger than {MANIFEST_MAX_BYTES} bytes")
    doc = _load_document(data, name)
    resolved = _resolve_placeholders(doc, dict(variables or {}), name)
    if not isinstance(resolved, dict):
        raise FormatError(f"{name}: top level must be an object")
    if "modulesContent" in resolved or "moduleContent" in resolved:
        return Manifest(KIND_IOTEDGE, resolved, _iotedge_modules(resolved, name))
    if "services" in resolved:
        return Manifest(KIND_COMPOSE, resolved, _compose_modules(resolved, name))
    raise FormatError(
        f"{name}: neither an IoT Edge deployment (no 'modulesContent') "
        "nor a Compose file (no 'services')"
    )


def _load_document(data: bytes, name: str) -> Any:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{name}: not UTF-8 text") from exc
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{name}: invalid JSON: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FormatError(f"{name}: invalid YAML: {exc}") from exc


def _resolve_placeholders(node: Any, variables: dict[str, str], name: str) -> Any:
    """Substitute ``${VAR}`` in every string; collect all unresolved names first."""
    missing: set[str] = set()

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return _VAR.sub(lambda m: _lookup(m.group(1), variables, missing), value)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    out = walk(node)
    if missing:
        raise FormatError(
            f"{name}: no value for {', '.join('${' + v + '}' for v in sorted(missing))} "
            "(give --var NAME=VALUE or set the environment variable)"
        )
    return out


def _lookup(var: str, variables: dict[str, str], missing: set[str]) -> str:
    if var in variables:
        return variables[var]
    missing.add(var)
    return ""


def _edge_agent_desired(doc: dict[str, Any], name: str) -> dict[str, Any]:
    content = doc.get("modulesContent", doc.get("moduleContent"))
    path = "modulesContent.$edgeAgent"
    agent = content.get("$edgeAgent") if isinstance(content, dict) else None
    if not isinstance(agent, dict):
        raise FormatError(f"{name}: missing {path}")
    props = agent.get("properties.desired")
    if props is None:
        props = (
            agent.get("properties", {}).get("desired")
            if isinstance(agent.get("properties"), dict)
            else None
        )
    if not isinstance(props, dict):
        raise FormatError(f"{name}: missing {path}.properties.desired")
    return props


def _iotedge_modules(doc: dict[str, Any], name: str) -> tuple[ModuleImage, ...]:
    desired = _edge_agent_desired(doc, name)
    found: list[ModuleImage] = []
    for section in ("systemModules", "modules"):
        modules = desired.get(section, {})
        if not isinstance(modules, dict):
            raise FormatError(f"{name}: desired.{section} must be an object")
        for module, spec in modules.items():
            where = f"desired.{section}.{module}"
            settings = spec.get("settings") if isinstance(spec, dict) else None
            if not isinstance(settings, dict):
                raise FormatError(f"{name}: {where} has no settings object")
            found.append(
                ModuleImage(module, _checked_reference(settings.get("image"), where, name))
            )
    if not found:
        raise FormatError(f"{name}: the deployment names no modules")
    return tuple(found)


def _compose_modules(doc: dict[str, Any], name: str) -> tuple[ModuleImage, ...]:
    services = doc["services"]
    if not isinstance(services, dict) or not services:
        raise FormatError(f"{name}: 'services' must be a non-empty mapping")
    found = []
    for service, spec in services.items():
        where = f"services.{service}"
        if not isinstance(spec, dict):
            raise FormatError(f"{name}: {where} must be a mapping")
        if "image" not in spec and "build" in spec:
            raise FormatError(f"{name}: {where} has only 'build', no 'image' to deploy")
        found.append(ModuleImage(str(service), _checked_reference(spec.get("image"), where, name)))
    return tuple(found)


def _checked_reference(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FormatError(f"{name}: {where} has no image")
    ref = value.strip()
    if len(ref) > REFERENCE_MAX_CHARS or not _REFERENCE.match(ref):
        raise FormatError(f"{name}: {where} image {ref[:80]!r} is not a valid image reference")
    return ref


def normalize_reference(reference: str) -> str:
    """The reference images are registered under: no transport prefix, ':latest' if no tag."""
    ref = reference.removeprefix("docker://")
    if "@" in ref:
        return ref
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else f"{ref}:latest"


def split_registry(reference: str) -> tuple[str | None, str]:
    """("registry host", "repository[:tag|@digest]"); host None for Docker Hub short names."""
    first, sep, rest = reference.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return None, reference


def local_reference(reference: str, local_registry: str) -> str:
    """REFERENCE as the device's local registry serves it: same repository and tag."""
    _, path = split_registry(normalize_reference(reference))
    return f"{local_registry}/{path}"


def rewrite_for_device(manifest: Manifest, local_registry: str) -> dict[str, Any]:
    """The manifest with every module image pointing at the device's local registry."""
    doc = copy.deepcopy(manifest.document)
    if manifest.kind == KIND_COMPOSE:
        for spec in doc["services"].values():
            spec["image"] = local_reference(spec["image"], local_registry)
        return doc
    desired = _edge_agent_desired(doc, "manifest")
    for section in ("systemModules", "modules"):
        for spec in desired.get(section, {}).values():
            settings = spec["settings"]
            settings["image"] = local_reference(settings["image"], local_registry)
    return doc
