"""Compose files as the compose-spec defines them (https://github.com/compose-spec/compose-spec).

- ``services.NAME.image`` is the image a service runs ("services" section, image);
- ``extends`` ("services" section, extends) takes a service of the same file, or of
  ``file:`` when the caller can read files (LOAD_FILE), as the base the service's own
  keys are merged over (mappings merged, other values replaced: the spec's "Merge and
  override" for the keys that name images);
- a service with ``profiles`` is started only when one of them is active
  ("Using profiles with Compose": services without profiles are always enabled);
- a service with only ``build`` (no image) or a ``provider`` runs nothing deltaport can
  send: skipped with a warning;
- the device rewrite points ``image`` at the device registry and drops ``build`` and a
  ``pull_policy`` of ``never``/``build``, which would stop the runtime from pulling it.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from deltaport.errors import FormatError
from deltaport.manifests.model import Locate, Manifest, ModuleImage
from deltaport.manifests.reference import parse_image
from deltaport.manifests.yamlload import RESET, Override

PULL_POLICIES_DROPPED = frozenset({"never", "build"})
EXTENDS_MAX_CHAIN = 16  # services one extends chain may pass through
INCLUDE_MAX_DEPTH = 16  # files one include chain may pass through
COMPOSE_PROFILES_VARIABLE = "COMPOSE_PROFILES"  # profiles when no --profile is given

LoadFile = Callable[[str], dict[str, Any]]  # compose file path -> its document


def resolve_include(
    doc: dict[str, Any],
    name: str,
    load_file: LoadFile | None = None,
    origin: str = "",
    depth: int = 0,
) -> dict[str, Any]:
    """DOC with the services of every ``include`` file added (compose-spec "Include").

    A service both included and defined here is an error, as the spec says. Paths are
    relative to the file that names them (ORIGIN: its folder, relative to the first
    file); an included file's own ``extends`` and ``include`` are resolved from its folder.

    Raises:
        FormatError: a malformed ``include``, a conflict, too deep (a cycle?), or files
            that cannot be read.
    """
    include = doc.get("include")
    if include is None:
        return doc
    if depth >= INCLUDE_MAX_DEPTH:
        raise FormatError(f"{name}: include nested deeper than {INCLUDE_MAX_DEPTH} (a cycle?)")
    if not isinstance(include, list):
        raise FormatError(f"{name}: include must be a list")
    services = dict(doc.get("services") or {})
    for index, item in enumerate(include):
        paths = item.get("path") if isinstance(item, dict) else item
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise FormatError(f"{name}: include[{index}] must name a file (path)")
        if load_file is None:
            raise FormatError(f"{name}: include[{index}]: {paths[0]!r} cannot be read here")
        for relative in paths:
            path = relative_to(origin, relative)
            folder = posixpath.dirname(path)
            other = resolve_extends(load_file(path), path, load_file, folder)
            other = resolve_include(other, path, load_file, folder, depth + 1)
            for service, spec in (other.get("services") or {}).items():
                if service in services:
                    raise FormatError(
                        f"{name}: service {service!r} from include {relative!r} conflicts "
                        "with one already defined"
                    )
                services[service] = spec
    out = {k: v for k, v in doc.items() if k != "include"}
    out["services"] = services
    return out


def relative_to(origin: str, path: str) -> str:
    """PATH, named in a file of folder ORIGIN, as a path from the first file's folder."""
    return posixpath.normpath(posixpath.join(origin, path)) if origin else path


def resolve_extends(
    doc: dict[str, Any], name: str, load_file: LoadFile | None = None, origin: str = ""
) -> dict[str, Any]:
    """DOC with every ``extends`` replaced by the merged base service.

    ``extends.file`` is relative to the file that names it (ORIGIN: the folder of DOC,
    relative to the first file), so a base file may itself extend a file beside it.

    Raises:
        FormatError: a malformed ``extends``, an unknown base service, a cycle, or a
            ``file:`` when files cannot be read.
    """
    services = doc.get("services")
    if not isinstance(services, dict):
        return doc
    out = {
        svc: _extended(services, svc, spec, _Source(name, origin, load_file), 0)
        for svc, spec in services.items()
    }
    return {**doc, "services": out}


@dataclass(frozen=True)
class _Source:
    """The file a service is defined in: its NAME, its folder ORIGIN, how to read others."""

    name: str
    origin: str
    load_file: LoadFile | None


def _extended(services: dict[str, Any], service: str, spec: Any, src: _Source, depth: int) -> Any:
    if not isinstance(spec, dict) or "extends" not in spec:
        return spec
    where = f"{src.name}: services.{service}.extends"
    if depth >= EXTENDS_MAX_CHAIN:
        raise FormatError(f"{where}: extends chain longer than {EXTENDS_MAX_CHAIN} (a cycle?)")
    ext = spec["extends"]
    ext = {"service": ext} if isinstance(ext, str) else ext
    if not isinstance(ext, dict) or not isinstance(ext.get("service"), str):
        raise FormatError(f"{where} must name a service")
    base_services, base_src = services, src
    if "file" in ext:
        if src.load_file is None:
            raise FormatError(f"{where}: file {ext['file']!r} cannot be read here")
        path = relative_to(src.origin, str(ext["file"]))
        other = src.load_file(path)
        base_services = other.get("services") or {}
        base_src = _Source(path, posixpath.dirname(path), src.load_file)
    base = base_services.get(ext["service"]) if isinstance(base_services, dict) else None
    if not isinstance(base, dict):
        raise FormatError(f"{where}: no service {ext['service']!r} in {base_src.name}")
    base = _extended(base_services, ext["service"], base, base_src, depth + 1)
    own = {k: v for k, v in spec.items() if k != "extends"}
    return merge_service(base, own)


def merge_documents(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """OVER merged over BASE by the compose-spec "Merge and override": mappings merged key
    by key, sequences appended, each service by the service rules (:func:`merge_service`)."""
    out = _merge(base, {k: v for k, v in over.items() if k != "services"})
    if "services" not in over:
        return out
    services, more = base.get("services"), over["services"]
    if not isinstance(services, dict) or not isinstance(more, dict):
        out["services"] = more
        return out
    merged = dict(services)
    for name, spec in more.items():
        own = merged.get(name)
        both = isinstance(own, dict) and isinstance(spec, dict)
        merged[name] = merge_service(own, spec) if both else spec  # type: ignore[arg-type]
    out["services"] = merged
    return out


def merge_service(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Service OVER merged over BASE (-f files, extends), as the compose-spec says:

    - ``command``, ``entrypoint``, ``healthcheck.test`` are replaced ("shell commands");
    - ``ports``, ``volumes``, ``secrets``, ``configs`` append entries, and an entry with the
      same unique key (target; for ports ip, target, published, protocol) replaces the
      earlier one ("unique resources");
    - ``environment``, ``labels``, ``annotations``, ``sysctls`` merge as mappings, whether
      written as mappings or ``KEY=VALUE`` lists;
    - other sequences are appended, mappings merged, scalars replaced; ``!reset`` removes,
      ``!override`` replaces whole.
    """
    return _merge(base, over, _service_value)


def _merge(
    base: dict[str, Any], over: dict[str, Any], value_of: _Rule | None = None
) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if value is RESET:
            out.pop(key, None)
        elif isinstance(value, Override):
            out[key] = value.value
        elif key in out:
            out[key] = (value_of or _merged_value)(key, out[key], value)
        else:
            out[key] = value
    return out


_Rule = Callable[[str, Any, Any], Any]  # (key, earlier value, later value) -> merged value


def _merged_value(key: str, current: Any, value: Any) -> Any:
    if isinstance(value, dict) and isinstance(current, dict):
        return _merge(current, value)
    if isinstance(value, list) and isinstance(current, list):
        return current + value
    return value


SHELL_COMMANDS = frozenset({"command", "entrypoint"})
UNIQUE_RESOURCES = frozenset({"ports", "volumes", "secrets", "configs"})
MAPPINGS_OR_LISTS = frozenset({"environment", "labels", "annotations", "sysctls"})


def _service_value(key: str, current: Any, value: Any) -> Any:
    if key in SHELL_COMMANDS:
        return value
    if key in UNIQUE_RESOURCES and isinstance(current, list) and isinstance(value, list):
        return _merge_unique(key, current, value)
    mappings = isinstance(current, list | dict) and isinstance(value, list | dict)
    if key in MAPPINGS_OR_LISTS and mappings:
        return _merge(_as_mapping(current), _as_mapping(value))
    if key == "healthcheck" and isinstance(current, dict) and isinstance(value, dict):
        merged = _merge(current, value)
        if isinstance(value.get("test"), list | str):
            merged["test"] = value["test"]
        return merged
    return _merged_value(key, current, value)


def _merge_unique(key: str, current: list[Any], value: list[Any]) -> list[Any]:
    out = list(current)
    where = {_unique_key(key, item): i for i, item in enumerate(out)}
    for item in value:
        unique = _unique_key(key, item)
        if unique is not None and unique in where:
            i = where[unique]
            both = isinstance(out[i], dict) and isinstance(item, dict)
            out[i] = _merge(out[i], item) if both else item
        else:
            where.setdefault(unique, len(out))
            out.append(item)
    return out


def _unique_key(key: str, item: Any) -> Any:
    """The compose-spec unique key of one ports/volumes/secrets/configs entry."""
    if key == "ports":
        if isinstance(item, dict):
            ip, target, published = (item.get(f) for f in ("host_ip", "target", "published"))
            texts = (str(v) if v is not None else "" for v in (ip, target, published))
            return (*texts, str(item.get("protocol") or "tcp"))
        text, _, protocol = str(item).partition("/")
        parts = text.rsplit(":", 2)
        ip, published, target = ["", "", *parts][-3:]
        return (ip, target, published, protocol or "tcp")
    if isinstance(item, dict):
        return item.get("target") or (item.get("source") if key != "volumes" else None)
    if key == "volumes":
        parts = str(item).split(":")
        return parts[1] if len(parts) > 1 else parts[0]
    return str(item)


def _as_mapping(value: list[Any] | dict[str, Any]) -> dict[str, Any]:
    """``[KEY=VALUE, KEY]`` as ``{KEY: VALUE, KEY: None}``; a mapping as it is."""
    if isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for item in value:
        name, sep, text = str(item).partition("=")
        out[name] = text if sep else None
    return out


def strip_merge_tags(node: Any) -> Any:
    """NODE once merged: a ``!reset`` left with nothing under it removes its key (or list
    item), an ``!override`` is its value."""
    if isinstance(node, Override):
        return strip_merge_tags(node.value)
    if isinstance(node, dict):
        return {k: strip_merge_tags(v) for k, v in node.items() if v is not RESET}
    if isinstance(node, list):
        return [strip_merge_tags(v) for v in node if v is not RESET]
    return node


def active_profiles(profiles: Collection[str], variables: Mapping[str, str]) -> tuple[str, ...]:
    """PROFILES if any were given, else those COMPOSE_PROFILES names (comma-separated),
    as ``docker compose`` does (compose-go ``WithDefaultProfiles``)."""
    if profiles:
        return tuple(profiles)
    listed = variables.get(COMPOSE_PROFILES_VARIABLE, "").split(",")
    return tuple(p.strip() for p in listed if p.strip())


def select_services(
    doc: dict[str, Any], profiles: Collection[str], name: str, warnings: list[str]
) -> dict[str, Any]:
    """The document with only the services that run: active profiles, something to pull.

    The merge tags are gone from it (:func:`strip_merge_tags`): every merge is done.

    Raises:
        FormatError: 'services' is not a non-empty mapping, a service is not a mapping,
            or nothing is left to deploy.
    """
    doc = strip_merge_tags(doc)
    services = doc.get("services")
    if not isinstance(services, dict) or not services:
        raise FormatError(f"{name}: 'services' must be a non-empty mapping")
    kept: dict[str, Any] = {}
    for service, spec in services.items():
        where = f"services.{service}"
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise FormatError(f"{name}: {where} must be a mapping")
        wanted = spec.get("profiles")
        if wanted is not None:
            if not isinstance(wanted, list) or not all(isinstance(p, str) for p in wanted):
                raise FormatError(f"{name}: {where}.profiles must be a list of names")
            if not set(wanted) & set(profiles):
                continue
        if "provider" in spec:
            warnings.append(f"{name}: {where} is a provider service (no image); skipped")
            continue
        image = spec.get("image")
        if image is None or (isinstance(image, str) and not image.strip() and "build" in spec):
            if "build" in spec:  # an empty image next to build is built, as compose does
                warnings.append(f"{name}: {where} has only 'build', no image to send; skipped")
                continue
            raise FormatError(f"{name}: {where} has no image")
        warnings.extend(f"{name}: {where}: {note}" for note in _undelivered_images(spec))
        kept[str(service)] = spec
    if not kept:
        raise FormatError(
            f"{name}: no service to deploy (all are build-only, providers or in inactive "
            "profiles; --profile NAME activates a profile)"
        )
    return {**doc, "services": kept}


def _undelivered_images(spec: dict[str, Any]) -> list[str]:
    """Images a service uses besides its own that deltaport does not send (warned of).

    compose-spec "volumes": ``type: image`` mounts another image's content.
    """
    volumes = spec.get("volumes")
    return [f"volume image {v.get('source')!r} is not sent to devices: put it on the "
            "device registry yourself or build it into the service's image"
            for v in (volumes if isinstance(volumes, list) else [])
            if isinstance(v, dict) and v.get("type") == "image"]


def compose_modules(
    doc: dict[str, Any], name: str, unset: Mapping[str, list[str]] | None = None
) -> tuple[ModuleImage, ...]:
    """(service, image) for every service of a selected document.

    UNSET (place → variables that had no value there) is named when an image is
    invalid because of it.
    """
    found = []
    for service, spec in doc["services"].items():
        image = spec.get("image")
        where = f"{name}: services.{service}"
        try:
            if not isinstance(image, str) or not image.strip():
                raise FormatError(f"{where} has no image")
            parse_image(image, where)
        except FormatError as exc:
            missing = (unset or {}).get(f"services.{service}.image")
            if not missing:
                raise
            names = ", ".join("${" + v + "}" for v in missing)
            raise FormatError(
                f"{exc} (no value for {names}: give --var NAME=VALUE, an --env-file, or --from-env)"
            ) from None
        found.append(ModuleImage(service, image.strip()))
    return tuple(found)


def rewrite_compose(manifest: Manifest, locate: Locate) -> dict[str, Any]:
    """The Compose document a device runs: images from its registry, nothing to build.

    LOCATE gives the device's reference for a manifest's image reference.
    """
    doc = copy.deepcopy(manifest.document)
    for spec in doc["services"].values():
        spec["image"] = locate(spec["image"])
        spec.pop("build", None)
        if spec.get("pull_policy") in PULL_POLICIES_DROPPED:
            del spec["pull_policy"]
    return doc
