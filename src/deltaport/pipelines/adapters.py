"""The real implementations of the pipeline Protocols, over ``deltaport.oci``/``delta``/``bundle``.

- :class:`OciIdentityReader` — reads image ID, manifest digest, diff_ids and sizes
  with ``deltaport.oci.open_source`` (any transport: ``docker://``, ``oci:``, …).
- :class:`DeltaSignatureMaker` — the delta engine's file-level signature file
  (``deltaport.delta.ranking.create_image_signature``), written atomically.
- :class:`SignatureRanker` — ranks the images on a device from their signature files
  (``deltaport.delta.ranking.rank_sources``) and picks the best one, plus every image
  sharing a layer with the target; falls back to shared layers without signatures.
- :class:`LayerListSignatureMaker` / :class:`LayerSourceRanker` — cheap layer-level
  versions (no file contents read), for tests and benchmarks.
- :class:`DeltaBundleBuilder` — builds and signs one bundle with
  ``deltaport.delta.image.create_image_delta``, reading target and source images
  from the cloud registry by their registered names.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deltaport.errors import StorageError, UsageError
from deltaport.fsutil import write_atomic
from deltaport.pipelines.interfaces import (
    BuiltBundle,
    BundleSpec,
    ImageIdentity,
    ImageInfo,
)
from deltaport.pipelines.planner import shared_layer_ranker

HASH_CHUNK = 1 << 20


def _docker_ref(name: str) -> str:
    """A registered name (host/repo:tag) as a docker:// reference; others pass through."""
    return (
        name
        if "://" in name or name.split(":", 1)[0] in {"oci", "docker-archive", "oci-archive"}
        else f"docker://{name}"
    )


def delivered_name(name: str) -> str:
    """The repository:tag a device stores registered image NAME under: its bundles' target.

    ``ghcr.io/acme/app:1`` → ``ghcr.io/acme/app:1``, ``nginx:latest`` →
    ``library/nginx:latest`` (:func:`deltaport.oci.reference.scoped_path`).
    """
    from deltaport.delta.image import target_name

    return target_name(_docker_ref(name))


class OciIdentityReader:
    """ImageIdentityReader over ``deltaport.oci``."""

    def __init__(self, options: Any = None) -> None:
        self.options = options

    def read_identity(self, reference: str) -> ImageIdentity:
        """Open REFERENCE and read its identity (uncompressed sizes when the source knows them)."""
        from deltaport.oci import open_source

        with open_source(reference, self.options) as src:
            layers = src.layers()
            return ImageIdentity(
                image_id=src.image_id(),
                manifest_digest=src.manifest_digest(),
                diff_ids=tuple(la.diff_id for la in layers),
                layer_sizes=tuple(la.uncompressed_size or la.size for la in layers),
            )


class LayerListSignatureMaker:
    """SignatureMaker writing the image identity as a JSON file (atomically)."""

    def make_signature(self, reference: str, identity: ImageIdentity, dest_dir: Path) -> Path:
        """Write ``<dest_dir>/<image id hex>.sig.json``."""
        doc = {
            "kind": "deltaport.layer-list",
            "version": 1,
            "reference": reference,
            "image_id": identity.image_id,
            "manifest_digest": identity.manifest_digest,
            "layers": [
                {"diff_id": d, "size": s}
                for d, s in zip(identity.diff_ids, identity.layer_sizes, strict=True)
            ],
        }
        dest = dest_dir / f"{identity.image_id.removeprefix('sha256:')}.sig.json"
        write_atomic(dest, json.dumps(doc, indent=2).encode())
        return dest


class LayerSourceRanker:
    """SourceRanker choosing shared layers plus the closest image on the device."""

    def choose_sources(self, target: ImageInfo, available: Sequence[ImageInfo]) -> tuple[str, ...]:
        """See ``planner.shared_layer_ranker``."""
        return shared_layer_ranker(target, available)


class DeltaSignatureMaker:
    """SignatureMaker over ``deltaport.delta.ranking`` (reads every layer once)."""

    def __init__(self, options: Any = None) -> None:
        self.options = options

    def make_signature(self, reference: str, identity: ImageIdentity, dest_dir: Path) -> Path:
        """Write ``<dest_dir>/<image id hex>.sig`` (zstd JSON of every file's hash)."""
        import io

        from deltaport.delta.ranking import create_image_signature
        from deltaport.delta.signature import dump_image_signature

        sig = create_image_signature(reference, self.options)
        buf = io.BytesIO()
        dump_image_signature(sig, buf)
        dest = dest_dir / f"{identity.image_id.removeprefix('sha256:')}.sig"
        write_atomic(dest, buf.getvalue())
        return dest


class SignatureRanker:
    """SourceRanker from signature files: the best-ranked image on the device, plus
    every image on it that shares a layer with the target (those layers cost nothing)."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def _load(self, info: ImageInfo) -> Any:
        from deltaport.delta.signature import load_image_signature

        path = info.signature_path
        if not path or not path.endswith(".sig"):
            return None
        if path not in self._cache:
            try:
                with open(path, "rb") as fh:
                    self._cache[path] = load_image_signature(fh)
            except OSError as exc:
                raise StorageError(f"cannot read signature file {path}: {exc}") from exc
        return self._cache[path]

    def choose_sources(self, target: ImageInfo, available: Sequence[ImageInfo]) -> tuple[str, ...]:
        """See the class docstring. Raises FormatError for a corrupt signature file."""
        from deltaport.delta.ranking import rank_sources

        target_sig = self._load(target)
        sigs = {a.image_id: self._load(a) for a in available}
        if target_sig is None or not available or any(v is None for v in sigs.values()):
            return shared_layer_ranker(target, available)
        best = rank_sources(target_sig, [sigs[a.image_id] for a in available])[0]
        wanted = set(target.diff_ids)
        chosen = {
            d
            for a in available
            if a.image_id == best.image_id or wanted & set(a.diff_ids)
            for d in a.diff_ids
        }
        return tuple(sorted(chosen))


class DeltaBundleBuilder:
    """BundleBuilder over ``deltaport.delta.image.create_image_delta``."""

    def __init__(
        self, options: Any = None, signing_key: Any = None, patch_cache: Path | None = None
    ) -> None:
        self.options = options
        self.signing_key = signing_key
        self.patch_cache = patch_cache  # folder of layer patches built once, reused

    @property
    def signer(self) -> str | None:
        """The signing key's id (``bundle.keys.key_id``), None without a key."""
        from deltaport.bundle.keys import key_id
        from deltaport.bundle.signing import Signer

        key = self.signing_key
        if key is None:
            return None
        private = key.private_key if isinstance(key, Signer) else key
        return key_id(private.public_key())

    def build(self, spec: BundleSpec, work_dir: Path) -> BuiltBundle:
        """Build the bundle for SPEC into WORK_DIR/<key>.dpb and hash it."""
        from deltaport.delta.image import create_image_delta
        from deltaport.delta.patchcache import PatchCache

        work_dir.mkdir(parents=True, exist_ok=True)
        out = work_dir / f"{spec.key}.dpb"
        wanted = set(spec.sources)
        sources = [
            _docker_ref(img.name) for img in spec.source_images if set(img.diff_ids) <= wanted
        ]
        summary = create_image_delta(
            _docker_ref(spec.target.name),
            sources,
            out,
            signing_key=self.signing_key,
            options=self.options,
            scratch=work_dir,
            patch_cache=PatchCache(self.patch_cache) if self.patch_cache else None,
            release=spec.release,
            config_bases=[_docker_ref(spec.config_base.name)] if spec.config_base else [],
        )
        return BuiltBundle(path=out, size=int(summary.bundle_bytes), digest=file_digest(out))

    def prebuild(self, reference: str, work_dir: Path) -> int:
        """Self-contained patches of every layer of REFERENCE into the patch cache.

        A first-image bundle is built and thrown away: its layer patches stay in the
        cache under the keys a later first-image build of any image with those layers
        looks up. Returns how many were built (not found in the cache).
        """
        from deltaport.delta.image import create_image_delta
        from deltaport.delta.patchcache import PatchCache

        if self.patch_cache is None:
            raise UsageError("prebuilding layer patches needs a patch cache")
        work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=work_dir, prefix="prebuild-") as tmp:
            summary = create_image_delta(
                reference, [], Path(tmp) / "first-image.dpb", options=self.options,
                scratch=Path(tmp), patch_cache=PatchCache(self.patch_cache),
            )
        return sum(
            1 for la in summary.layers if la.encoding == "patch" and not la.stats.get("cached")
        )


def file_digest(path: Path) -> str:
    """sha256:… of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


