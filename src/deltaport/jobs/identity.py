"""Which layer patches a bundle needs, and under which identity (pure).

A layer patch is named by its patch-cache key (``delta.patchcache.patch_key``): the
target layer's diff_id, the set of candidate source diff_ids and the engine's knobs and
version. The builder (``pipelines.adapters.DeltaBundleBuilder``) opens every registered
image made only of the bundle's source layers, so the candidate set is the union of
those images' layers; a target layer in that set is not sent at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from deltaport.delta.model import DeltaConfig
from deltaport.delta.patchcache import patch_key
from deltaport.pipelines.adapters import _docker_ref as docker_ref
from deltaport.pipelines.interfaces import BundleSpec


@dataclass(frozen=True)
class PatchJob:
    """One layer patch to build: what a ``build_patch`` job carries (JSON-safe)."""

    key: str  # the patch-cache key: the patch's identity fleet-wide
    target_ref: str  # docker:// reference of the image holding the target layer
    diff_id: str  # the target layer
    source_refs: tuple[str, ...]  # the images whose layers are the candidate sources

    def to_args(self) -> dict[str, Any]:
        """The job's keyword arguments."""
        return {
            "key": self.key,
            "target_ref": self.target_ref,
            "diff_id": self.diff_id,
            "source_refs": list(self.source_refs),
        }

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> PatchJob:
        """Inverse of :meth:`to_args`."""
        return cls(
            key=str(args["key"]),
            target_ref=str(args["target_ref"]),
            diff_id=str(args["diff_id"]),
            source_refs=tuple(str(r) for r in args["source_refs"]),
        )


def bundle_patch_jobs(spec: BundleSpec, config: DeltaConfig | None = None) -> list[PatchJob]:
    """The layer patches the bundle SPEC needs, in target layer order, each once."""
    cfg = config or DeltaConfig()
    wanted = set(spec.sources)
    holders = [img for img in spec.source_images if set(img.diff_ids) <= wanted]
    candidates = sorted({d for img in holders for d in img.diff_ids})
    refs = tuple(docker_ref(img.name) for img in holders)
    jobs: dict[str, PatchJob] = {}
    for diff_id in spec.target.diff_ids:
        if diff_id in candidates:
            continue
        key = patch_key(diff_id, candidates, cfg)
        jobs.setdefault(key, PatchJob(key, docker_ref(spec.target.name), diff_id, refs))
    return list(jobs.values())


def distinct_jobs(jobs: Iterable[PatchJob]) -> list[PatchJob]:
    """JOBS without repeats of a key (first kept)."""
    out: dict[str, PatchJob] = {}
    for job in jobs:
        out.setdefault(job.key, job)
    return list(out.values())
