"""Bytes in, :class:`Manifest` out: format detection, variables, limits, images."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from functools import partial
from typing import Any

from deltaport.errors import FormatError
from deltaport.manifests.compose import (
    LoadFile,
    active_profiles,
    compose_modules,
    merge_documents,
    resolve_extends,
    resolve_include,
    rewrite_compose,
    select_services,
)
from deltaport.manifests.interpolation import Interpolator
from deltaport.manifests.iotedge import (
    expand_template,
    iotedge_modules,
    looks_like_iotedge,
    rewrite_iotedge,
    unwrap,
)
from deltaport.manifests.model import Kind, Locate, Manifest
from deltaport.manifests.reference import local_reference
from deltaport.manifests.yamlload import decode, load_document, load_json


def parse_manifest(
    data: bytes,
    variables: Mapping[str, str] | None = None,
    name: str = "manifest",
    *,
    profiles: Collection[str] = (),
    load_file: LoadFile | None = None,
    overrides: Sequence[tuple[str, bytes]] = (),
) -> Manifest:
    """Parse an IoT Edge or Compose manifest; NAME is used in error messages.

    VARIABLES are the only values placeholders get (see
    :func:`deltaport.manifests.interpolation.resolve_variables` for where the CLI
    gathers them); PROFILES are the active Compose profiles; LOAD_FILE reads another
    Compose file named by ``extends: {file: ...}`` (none: such an extends is an error);
    OVERRIDES are (name, data) of further Compose files merged over it in order, as
    ``docker compose -f a.yaml -f b.yaml`` does (mappings merged, other values replaced).

    Raises:
        FormatError: too large, too deep, not JSON/YAML, neither format, an image
            missing or invalid, a required variable missing.
    """
    values = dict(variables or {})
    text = decode(data, name)
    if looks_like_iotedge(text):
        doc = load_json(expand_template(text, values, name), name)
        return _iotedge(doc, name)
    doc = load_document(text, name)
    if not isinstance(doc, dict):
        raise FormatError(f"{name}: top level must be an object")
    if unwrap(doc) is not None and not overrides:  # YAML IoT Edge, or JSON elsewhere
        return _iotedge(doc, name)
    for other_name, other_data in overrides:
        other = load_document(decode(other_data, other_name), other_name)
        if not isinstance(other, dict):
            raise FormatError(f"{other_name}: top level must be an object")
        doc = merge_documents(doc, other)
    if "services" in doc or "include" in doc:
        interpolator = Interpolator(values, name)
        warnings: list[str] = []
        extended = resolve_include(resolve_extends(doc, name, load_file), name, load_file)
        active = active_profiles(profiles, values)
        resolved = interpolator.walk(select_services(extended, active, name, warnings))
        warnings.extend(interpolator.warnings)
        return Manifest(
            Kind.COMPOSE,
            resolved,
            compose_modules(resolved, name, interpolator.unset),
            tuple(warnings),
        )
    raise FormatError(
        f"{name}: neither an IoT Edge deployment (no 'modulesContent') "
        "nor a Compose file (no 'services')"
    )


def _iotedge(doc: Any, name: str) -> Manifest:
    if not isinstance(doc, dict):
        raise FormatError(f"{name}: top level must be an object")
    return Manifest(Kind.IOTEDGE, doc, iotedge_modules(doc, name))


def rewrite_for_device(manifest: Manifest, local_registry: str,
                       locate: Locate | None = None) -> dict[str, Any]:
    """The manifest with every module image pointing at the device's local registry.

    LOCATE maps each image reference to the device's reference for it; by default
    :func:`local_reference` (the hub passes the names its bundles deliver under).
    """
    if locate is None:
        locate = partial(local_reference, local_registry=local_registry)
    if manifest.kind is Kind.COMPOSE:
        return rewrite_compose(manifest, locate)
    return rewrite_iotedge(manifest, locate)
