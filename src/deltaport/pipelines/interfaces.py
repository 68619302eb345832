"""The seams between the pipelines and the parts built elsewhere (OCI I/O, delta engine, bundle).

The pipelines reach the registry, the signature files and the bundle builder only
through these Protocols, so the planning and state logic can be tested fast with fakes
(``tests/fleet/fakes.py``) and the real implementations plug in at the CLI / hub edge:

- :class:`ImageIdentityReader` — ``deltaport.oci``: open ``docker://REF``, return the
  image ID (config digest), manifest digest and layer diff_ids + uncompressed sizes.
- :class:`SignatureMaker` — ``deltaport.delta``: write the signature file of an image.
- :class:`SourceRanker` — ``deltaport.delta``: from signature files, choose which source
  layers (diff_ids) on a device the patch for a target image should read.
- :class:`BundleBuilder` — ``deltaport.delta.image`` + ``deltaport.bundle``: build and
  sign the bundle that rebuilds a target image from those source layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from deltaport.bundle import Release
from deltaport.fleet.identity import ImageIdentity, ImageInfo

__all__ = [
    "BuiltBundle",
    "BundleBuilder",
    "BundleSpec",
    "ImageIdentity",
    "ImageIdentityReader",
    "ImageInfo",
    "SignatureMaker",
    "SourceRanker",
]


@dataclass(frozen=True)
class BundleSpec:
    """What one bundle must do: rebuild TARGET from SOURCES (diff_ids) a device has."""

    key: str
    target: ImageInfo
    sources: tuple[str, ...]  # sorted diff_ids the device is guaranteed to have
    source_images: tuple[ImageInfo, ...]  # registered images made only of SOURCES layers
    release: Release | None = None  # signed into the bundle: version and expiry (replay)
    config_base: ImageInfo | None = None  # the image the target config is packed against


@dataclass(frozen=True)
class BuiltBundle:
    """A bundle file on local disk, ready for the bundle store."""

    path: Path
    size: int
    digest: str  # "sha256:..." of the whole file


class ImageIdentityReader(Protocol):
    """Reads an image's identity from a registry (real one: ``deltaport.oci``)."""

    def read_identity(self, reference: str) -> ImageIdentity:
        """Identity of REFERENCE (e.g. ``docker://host/app:v1``).

        Raises:
            NotFoundError / TransferError / FormatError from the OCI layer.
        """
        ...


class SignatureMaker(Protocol):
    """Writes an image's signature file (real one: ``deltaport.delta``)."""

    def make_signature(self, reference: str, identity: ImageIdentity, dest_dir: Path) -> Path:
        """Write the signature file for REFERENCE under DEST_DIR; return its path."""
        ...


class SourceRanker(Protocol):
    """Chooses source layers for a target from signature files (real one: ``deltaport.delta``)."""

    def choose_sources(self, target: ImageInfo, available: Sequence[ImageInfo]) -> tuple[str, ...]:
        """The diff_ids, among AVAILABLE's layers, the patch for TARGET should read.

        Must be deterministic: the planner calls it once per distinct inventory.
        """
        ...


class BundleBuilder(Protocol):
    """Builds and signs one bundle (real one: ``deltaport.delta.image`` + ``deltaport.bundle``)."""

    @property
    def signer(self) -> str | None:
        """The id of the key bundles are signed with; None: they are built unsigned."""
        ...

    def build(self, spec: BundleSpec, work_dir: Path) -> BuiltBundle:
        """Build the bundle SPEC describes into a new file under WORK_DIR.

        Raises:
            MissingSourceError, TransferError, StorageError from the builder.
        """
        ...

    def prebuild(self, reference: str, work_dir: Path) -> int:
        """Build ahead the self-contained patch of every layer of REFERENCE (kept in the
        patch cache), so a later first-image bundle of it costs no compression.

        Returns how many layer patches were built (the others were cached already).

        Raises:
            UsageError: the builder has no patch cache.
            TransferError, StorageError from the builder.
        """
        ...
