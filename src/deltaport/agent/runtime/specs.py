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

from deltaport.agent.runtime.compose import compose_specs, parse_duration, parse_port, parse_volume
from deltaport.agent.runtime.iotedge import (
    CREATE_OPTIONS_CHUNK,
    MAX_CREATE_OPTIONS_CHUNKS,
    MAX_STARTUP_ORDER,
    iotedge_specs,
    join_create_options,
    split_create_options,
)
from deltaport.agent.runtime.specparse import SpecSet
from deltaport.desired import DesiredState, ManifestKind

__all__ = [
    "CREATE_OPTIONS_CHUNK", "MAX_CREATE_OPTIONS_CHUNKS", "MAX_STARTUP_ORDER", "SpecSet",
    "join_create_options", "module_specs", "parse_duration", "parse_port", "parse_volume",
    "split_create_options",
]


def module_specs(state: DesiredState) -> SpecSet:
    """Every module of STATE's deployment document as a ModuleSpec, in startup order.

    Raises:
        FormatError: the document is malformed, or names a module the signed modules
            list does not (the message names the module and the key).
    """
    warnings: list[str] = []
    if state.kind is ManifestKind.IOTEDGE:
        specs = iotedge_specs(state, warnings)
    else:
        specs = compose_specs(state, warnings)
    ordered = sorted(specs, key=lambda s: (s.startup_order, s.module))
    return SpecSet(tuple(ordered), tuple(warnings))
