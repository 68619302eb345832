"""What a parsed manifest is: its kind, resolved document, images, and warnings."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Locate = Callable[[str], str]  # a manifest's image reference -> the device's reference for it


class Kind(enum.StrEnum):
    """The two manifest formats deltaport reads."""

    IOTEDGE = "iotedge"
    COMPOSE = "compose"


KIND_IOTEDGE = Kind.IOTEDGE
KIND_COMPOSE = Kind.COMPOSE


@dataclass(frozen=True)
class ModuleImage:
    """One image the manifest needs, and where in the manifest it is used."""

    module: str  # IoT Edge module name or Compose service name
    reference: str  # resolved image reference, e.g. "myacr.azurecr.io/app:1.0"


@dataclass(frozen=True)
class Manifest:
    """A parsed, variable-resolved deployment manifest."""

    kind: str  # a Kind; a stored str is turned into one
    document: dict[str, Any]  # resolved document (placeholders substituted)
    modules: tuple[ModuleImage, ...]
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Kind(self.kind))  # rebuilt from a stored str

    @property
    def references(self) -> tuple[str, ...]:
        """Distinct image references, in manifest order."""
        return tuple(dict.fromkeys(m.reference for m in self.modules))
