"""Fakes of the pipeline Protocols, for fast logic tests (they can inject faults)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deltaport.errors import MissingSourceError, NotFoundError
from deltaport.notify.email import Email
from deltaport.pipelines.interfaces import BuiltBundle, BundleSpec, ImageIdentity, ImageInfo
from deltaport.pipelines.planner import shared_layer_ranker


def digest(text: str) -> str:
    """A sha256:… digest of TEXT (stands for a layer or config)."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def identity(name: str, layers: Sequence[str], size: int = 1000) -> ImageIdentity:
    """An image identity whose layers are named by strings (shared names = shared layers)."""
    diff_ids = tuple(digest(f"layer:{la}") for la in layers)
    return ImageIdentity(
        image_id=digest(f"config:{name}:{','.join(layers)}"),
        manifest_digest=digest(f"manifest:{name}"),
        diff_ids=diff_ids,
        layer_sizes=tuple(size for _ in diff_ids),
    )


@dataclass
class FakeRegistry:
    """ImageIdentityReader over a dict; unknown references raise NotFoundError."""

    images: dict[str, ImageIdentity] = field(default_factory=dict)

    def add(self, reference: str, layers: Sequence[str]) -> ImageIdentity:
        ident = identity(reference, layers)
        self.images[reference] = ident
        return ident

    def read_identity(self, reference: str) -> ImageIdentity:
        ref = reference.removeprefix("docker://")
        if ref not in self.images:
            raise NotFoundError(f"manifest unknown: {ref}", status=404)
        return self.images[ref]


class FakeSigner:
    """SignatureMaker writing the identity as JSON."""

    def make_signature(self, reference: str, identity: ImageIdentity, dest_dir: Path) -> Path:
        dest_dir.mkdir(parents=True, exist_ok=True)
        path = dest_dir / f"{identity.image_id[7:]}.sig"
        path.write_text(json.dumps({"ref": reference, "diff_ids": identity.diff_ids}))
        return path


@dataclass
class CountingRanker:
    """SourceRanker using shared layers; counts calls."""

    calls: int = 0

    def choose_sources(self, target: ImageInfo, available: Sequence[ImageInfo]) -> tuple[str, ...]:
        self.calls += 1
        return shared_layer_ranker(target, available)


@dataclass
class FakeBuilder:
    """BundleBuilder writing a small JSON file; records every spec; can be told to fail."""

    built: list[BundleSpec] = field(default_factory=list)
    fail_on: set[str] = field(default_factory=set)  # target names
    signer: str | None = "fake-signing-key"  # None: builds unsigned bundles

    def build(self, spec: BundleSpec, work_dir: Path) -> BuiltBundle:
        if spec.target.name in self.fail_on:
            raise MissingSourceError(f"cannot build {spec.target.name}", list(spec.sources))
        self.built.append(spec)
        work_dir.mkdir(parents=True, exist_ok=True)
        data = json.dumps(
            {"target": spec.target.image_id, "sources": spec.sources}, sort_keys=True
        ).encode() + b"\0" * (100 * (1 + len(spec.target.diff_ids)))
        path = work_dir / f"{spec.key}.tmp"
        path.write_bytes(data)
        return BuiltBundle(path, len(data), "sha256:" + hashlib.sha256(data).hexdigest())

    def prebuild(self, reference: str, work_dir: Path) -> int:
        return 0  # nothing to cache: fake bundles are not made of layer patches


@dataclass
class RecordingNotifier:
    """Notifier that keeps what it was asked to send."""

    sent: list[Email] = field(default_factory=list)

    def send(self, email: Email) -> None:
        self.sent.append(email)
