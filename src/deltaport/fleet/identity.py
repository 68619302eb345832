"""What fleet stores about an image: its identity as a registry reports it, and the
planner's view of a registered image.

These live in fleet (not in ``deltaport.pipelines``) so fleet never imports the
pipelines: the pipelines import fleet, never the reverse (``pipelines.interfaces``
re-exports them under their old names).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageIdentity:
    """What a registry says an image is: enough to recognise its content anywhere."""

    image_id: str  # sha256 digest of the config blob
    manifest_digest: str
    diff_ids: tuple[str, ...]  # uncompressed layer digests, bottom first
    layer_sizes: tuple[int, ...]  # uncompressed layer sizes, same order


@dataclass(frozen=True)
class ImageInfo:
    """A registered image as the planner and the builders see it."""

    name: str  # registry/repository:tag it was registered under
    image_id: str
    diff_ids: tuple[str, ...]
    layer_sizes: tuple[int, ...]
    signature_path: str | None = None
    manifest_digest: str = ""

    @property
    def size(self) -> int:
        """Uncompressed size of all layers."""
        return sum(self.layer_sizes)
