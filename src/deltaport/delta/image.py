"""Image-level deltas: turn the content of source images into a target image.

The orchestrator over three parts: ``deltaport.oci`` reads and writes images, the
layer engine (``deltaport.delta``) encodes and rebuilds one layer, and
``deltaport.bundle`` packs and signs the result. Everything that touches disk or
network for an image delta happens here; which layer is sent how is a pure function
of diff_ids (``plan_layers``), and the bundle's content document is built and checked
by ``deltaport.delta.content``.

A bundle holds ONE payload member: the zstd-compressed target config, then each layer
patch, back to back (offsets in the signed content). Per-member tar headers and
padding would otherwise cost more than a small update's patches.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from deltaport.bundle import BundleReader, BundleWriter, Release
from deltaport.delta.apply import apply_layer_patch, read_patch_requirements
from deltaport.delta.build import build_layer_patch
from deltaport.delta.configpack import MAX_CONFIG_BYTES, pack_config, unpack_config
from deltaport.delta.content import (
    PAYLOAD_MEMBER,
    BundleContent,
    LayerEntry,
    Part,
    build_content,
    check_layers_match_config,
    missing_sources,
    parse_content,
)
from deltaport.delta.model import DeltaConfig, SourceLayer
from deltaport.delta.patchcache import PatchCache, patch_key
from deltaport.delta.spool import COPY_BUFSIZE, FileWindow, LayerSpool, WriteOnly, verify_window
from deltaport.errors import FormatError, IntegrityError, MissingSourceError
from deltaport.oci import (
    ImageDestination,
    ImageSource,
    Layer,
    Transport,
    TransportOptions,
    open_destination,
    open_source,
    parse_reference,
)
from deltaport.oci.model import parse_config
from deltaport.oci.reference import scoped_path

MAX_PACKED_CONFIG = MAX_CONFIG_BYTES  # bytes of the payload's config part read into memory


ProgressFn = Callable[[str, int, int], None]
"""progress(step description, done, total) — total 0 when unknown."""


@dataclass(frozen=True)
class LayerPlan:
    """How one target layer reaches the device."""

    index: int
    diff_id: str
    encoding: str  # "source": the device has this diff_id; "patch": sent in the bundle


@dataclass(frozen=True)
class LayerResult:
    """What was sent for one target layer (for summaries)."""

    index: int
    diff_id: str
    encoding: str
    kind: str  # "source", "delta" or "full"
    size: int  # uncompressed layer bytes (0 when unknown)
    patch_bytes: int
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeltaSummary:
    """The result of ``create_image_delta``."""

    bundle: Path
    bundle_bytes: int
    target_name: str
    image_id: str
    target_size: int
    layers: tuple[LayerResult, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle),
            "bundle_bytes": self.bundle_bytes,
            "target": self.target_name,
            "image_id": self.image_id,
            "target_size": self.target_size,
            "layers": [
                {
                    "index": r.index,
                    "diff_id": r.diff_id,
                    "encoding": r.kind,
                    "size": r.size,
                    "patch_bytes": r.patch_bytes,
                    "stats": r.stats,
                }
                for r in self.layers
            ],
        }


@dataclass(frozen=True)
class ApplySummary:
    """The result of ``apply_image_delta``."""

    destination: str
    image_id: str
    manifest_digest: str
    layers_patched: int
    layers_from_source: int


def plan_layers(target_diff_ids: Sequence[str], source_diff_ids: set[str]) -> list[LayerPlan]:
    """Pure: a layer the device already has (same diff_id) costs nothing."""
    return [
        LayerPlan(i, d, "source" if d in source_diff_ids else "patch")
        for i, d in enumerate(target_diff_ids)
    ]


def _sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def target_name(ref: str) -> str:
    """The repository:tag a device stores the target as, in its own registry.

    A registry image keeps its registry in the path (:func:`scoped_path`):
    "docker://hub.example:5000/demo/app:v2" -> "hub.example_5000/demo/app:v2",
    "docker://nginx" -> "library/nginx:latest"; "docker-archive:x.tar:app:v2" ->
    "app:v2"; "oci:dir:v2" -> "dir:v2" (a layout has no repository name).
    """
    parsed = parse_reference(ref)
    name = parsed.name
    if name is not None and parsed.transport is Transport.DOCKER:
        return scoped_path(name)
    if name is not None:
        return name.familiar
    stem = parsed.path.stem if parsed.path is not None else "image"
    return f"{stem}:{parsed.tag or 'latest'}"


@contextmanager
def _scratch_dir(parent: Path | None) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="deltaport-", dir=parent) as d:
        yield Path(d)


def _index_sources(sources: Sequence[ImageSource]) -> dict[str, tuple[ImageSource, Layer]]:
    """Map every source layer's diff_id to (the image that has it, its layer)."""
    found: dict[str, tuple[ImageSource, Layer]] = {}
    for src in sources:
        for layer in src.layers():
            found.setdefault(layer.diff_id, (src, layer))
    return found


def create_image_delta(
    target_ref: str,
    source_refs: Sequence[str],
    out: Path,
    *,
    signing_key: Any = None,
    options: TransportOptions | None = None,
    config: DeltaConfig | None = None,
    scratch: Path | None = None,
    progress: ProgressFn | None = None,
    extra_content: Mapping[str, Any] | None = None,
    patch_cache: PatchCache | None = None,
    release: Release | None = None,
    config_bases: Sequence[str] | None = None,
) -> DeltaSummary:
    """Build one bundle that turns the content of all ``source_refs`` into ``target_ref``.

    With no sources the bundle is self-contained (every layer sent in full, compressed).
    With ``patch_cache``, a layer patch built before for the same target layer,
    candidate sources and config is reused instead of built again.
    ``extra_content`` adds signed fields to the bundle's content (the hub puts
    ``devices`` and ``deployment`` there); it cannot replace the image-delta fields.
    ``release`` (version and expiry) is signed into the index, against replay.
    The target config is packed against the config of one of ``config_bases`` (image
    references the device is known to have; by default the sources) where that is
    smaller (``delta.configpack``); the device then needs that image.
    """
    opts = options or TransportOptions()
    cfg = config or DeltaConfig()
    with ExitStack() as stack:
        target = stack.enter_context(open_source(target_ref, opts))
        sources = [stack.enter_context(open_source(r, opts)) for r in source_refs]
        work = stack.enter_context(_scratch_dir(scratch))
        by_diff_id = _index_sources(sources)
        target_layers = target.layers()
        plans = plan_layers([la.diff_id for la in target_layers], set(by_diff_id))
        source_layers: list[SourceLayer] = []
        if any(p.encoding == "patch" for p in plans):
            spool = LayerSpool(work / "sources")
            source_layers = [
                SourceLayer(diff_id=d, path=spool.ensure(src, layer))
                for d, (src, layer) in by_diff_id.items()
            ]
        payload_path = work / "payload"
        with open(payload_path, "wb") as payload:
            packed = pack_config(target.config_bytes(),
                                 _base_configs(sources, config_bases, opts),
                                 use_base=cfg.config_base)
            payload.write(packed.data)
            config_part = Part(0, len(packed.data))
            results: list[LayerResult] = []
            entries: list[LayerEntry] = []
            for plan, layer in zip(plans, target_layers, strict=True):
                if progress:
                    progress(f"layer {plan.index + 1}/{len(plans)}", plan.index, len(plans))
                result, entry = _encode_layer(
                    plan, layer, target, by_diff_id, source_layers, payload, work, cfg,
                    patch_cache,
                )
                results.append(result)
                entries.append(entry)
        name, image_id = target_name(target_ref), target.image_id()
        target_size = sum(r.size for r in results)
        content = {
            **dict(extra_content or {}),
            **build_content(
                target_name=name,
                image_id=image_id,
                target_size=target_size,
                config=config_part,
                layers=entries,
                config_codec=packed.codec,
                config_base=packed.base,
            ),
        }
        writer = stack.enter_context(BundleWriter(out))
        with open(payload_path, "rb") as payload_in:
            writer.add_member(PAYLOAD_MEMBER, payload_in,
                              media_type="application/vnd.deltaport.image-delta-payload")
        info = writer.finish(content, signing_key, release)
    return DeltaSummary(
        bundle=out,
        bundle_bytes=int(info.size),
        target_name=name,
        image_id=image_id,
        target_size=target_size,
        layers=tuple(results),
    )


def _base_configs(sources: Sequence[ImageSource], refs: Sequence[str] | None,
                  opts: TransportOptions) -> list[tuple[str, bytes]]:
    """(image ID, config) of each image the target config may be packed against."""
    if refs is None:
        return [(s.image_id(), s.config_bytes()) for s in sources]
    found = []
    for ref in refs:
        with open_source(ref, opts) as src:
            found.append((src.image_id(), src.config_bytes()))
    return found


def _encode_layer(
    plan: LayerPlan,
    layer: Layer,
    target: ImageSource,
    by_diff_id: Mapping[str, tuple[ImageSource, Layer]],
    sources: Sequence[SourceLayer],
    payload: BinaryIO,
    work: Path,
    cfg: DeltaConfig,
    cache: PatchCache | None = None,
) -> tuple[LayerResult, LayerEntry]:
    """Encode one target layer: nothing for a layer the device has, else a patch."""
    if plan.encoding == "source":
        size = by_diff_id[plan.diff_id][1].uncompressed_size or layer.uncompressed_size or 0
        result = LayerResult(plan.index, plan.diff_id, "source", "source", size, 0)
        return result, LayerEntry("source", sources=(plan.diff_id,))
    key = patch_key(plan.diff_id, [s.diff_id for s in sources], cfg)
    hit = cache.get(key) if cache is not None else None
    offset = payload.tell()
    if hit is not None:
        with open(hit.path, "rb") as patch_in:
            shutil.copyfileobj(patch_in, payload, COPY_BUFSIZE)
        stats_json = {**hit.stats, "cached": True}
        size = int(stats_json.get("target_size", 0))
    else:
        target_tar = work / f"target-{plan.index}.tar"
        with target.open_layer(layer) as stream, open(target_tar, "wb") as f:
            shutil.copyfileobj(stream, f, COPY_BUFSIZE)
        size = target_tar.stat().st_size
        patch_path = work / f"layer-{plan.index}.patch"
        with open(patch_path, "wb") as patch_out:
            stats = build_layer_patch(target_tar, sources, patch_out, config=cfg)
        with open(patch_path, "rb") as patch_in:
            shutil.copyfileobj(patch_in, payload, COPY_BUFSIZE)
        target_tar.unlink()
        stats_json = stats.to_json()
        if cache is not None:
            cache.put(key, patch_path, stats_json)
        patch_path.unlink()
    length = payload.tell() - offset
    kind = str(stats_json.get("kind", "delta"))
    needed = tuple(str(d) for d in stats_json.get("required_sources", []))
    result = LayerResult(plan.index, plan.diff_id, "patch", kind, size, length, stats_json)
    return result, LayerEntry("patch", kind, Part(offset, length), needed)


def apply_image_delta(
    bundle: Path,
    source_refs: Sequence[str],
    dest_ref: str,
    *,
    trusted_keys: Sequence[Any] | None = None,
    options: TransportOptions | None = None,
    scratch: Path | None = None,
    progress: ProgressFn | None = None,
) -> ApplySummary:
    """Rebuild the bundle's target image from the sources and write it to ``dest_ref``.

    Checks, in order, before anything is written at the destination: the bundle's
    signature (when ``trusted_keys`` is given), its content, the payload's signed
    digest, that every source layer it needs is present, the config (rebuilt against
    its base image's config where it has one) against the image ID. The destination is
    committed (manifest last) only after every layer hashed to its diff_id.

    Raises:
        SignatureError, FormatError, TruncatedError: a bad bundle.
        MissingSourceError: source layers the device lacks, by diff_id, or the image
            the config is packed against.
        IntegrityError: the payload, a rebuilt layer or the config does not match.
    """
    opts = options or TransportOptions()
    with ExitStack() as stack:
        reader = stack.enter_context(BundleReader(bundle, trusted_keys=trusted_keys))
        content = parse_content(reader.index.content)
        member = reader.index.member(content.payload)
        bundle_file = stack.enter_context(open(bundle, "rb"))
        payload = FileWindow(bundle_file, reader.index.payload_offset + member.offset,
                             member.size)
        verify_window(payload, member.digest, f"bundle member {member.name}")
        sources = [stack.enter_context(open_source(r, opts)) for r in source_refs]
        by_diff_id = _index_sources(sources)
        missing = missing_sources(content.sources, set(by_diff_id))
        if missing:
            raise MissingSourceError(
                "the bundle needs source layers that are not on this device: "
                + ", ".join(missing),
                missing,
            )
        config_bytes = _read_config(payload, content, sources)
        diff_ids = parse_config(config_bytes, "bundle target config").diff_ids
        check_layers_match_config(content, diff_ids)
        spool = LayerSpool(stack.enter_context(_scratch_dir(scratch)) / "sources")
        dest = stack.enter_context(open_destination(dest_ref, opts))
        written: list[Layer] = []
        for i, (diff_id, entry) in enumerate(zip(diff_ids, content.layers, strict=True)):
            if progress:
                progress(f"layer {i + 1}/{len(diff_ids)}", i, len(diff_ids))
            written.append(_write_layer(diff_id, entry, payload, by_diff_id, spool, dest))
        manifest_digest = dest.commit(config_bytes, written)
    patched = sum(1 for e in content.layers if e.encoding == "patch")
    return ApplySummary(
        destination=dest_ref,
        image_id=content.image_id,
        manifest_digest=str(manifest_digest),
        layers_patched=patched,
        layers_from_source=len(content.layers) - patched,
    )


def _read_config(payload: FileWindow, content: BundleContent,
                 sources: Sequence[ImageSource]) -> bytes:
    """The target config from the payload (against its base among SOURCES if it has
    one), checked against the image ID."""
    if content.config.length > MAX_PACKED_CONFIG:
        raise FormatError(f"bundle target config takes more than {MAX_PACKED_CONFIG} bytes")
    window = payload.window(content.config.offset, content.config.length)
    base = next((s for s in sources if s.image_id() == content.config_base), None)
    configs = {base.image_id(): base.config_bytes()} if base is not None else {}
    data = unpack_config(window.buffered().read(), content.config_codec,
                         content.config_base, configs)
    if _sha256_digest(data) != content.image_id:
        raise IntegrityError(f"bundle config does not hash to the image ID {content.image_id}")
    return bytes(data)


def _write_layer(
    diff_id: str,
    entry: LayerEntry,
    payload: FileWindow,
    by_diff_id: Mapping[str, tuple[ImageSource, Layer]],
    spool: LayerSpool,
    dest: ImageDestination,
) -> Layer:
    """Store one target layer at the destination: passed through, or rebuilt."""
    if entry.encoding == "source":
        src, layer = by_diff_id[diff_id]
        with src.open_blob(layer) as blob:
            return dest.put_blob(layer, blob)
    assert entry.part is not None  # parse_content guarantees it for patches
    window = payload.window(entry.part.offset, entry.part.length)
    needed = list(read_patch_requirements(window.buffered()).sources)
    absent = [d for d in needed if d not in by_diff_id]
    if absent:
        raise MissingSourceError(
            f"layer {diff_id} needs source layers that are not on this device: "
            + ", ".join(absent),
            absent,
        )
    paths = {d: spool.ensure(*by_diff_id[d]) for d in needed}
    writer = dest.layer_writer()
    apply_layer_patch(window.buffered(), paths, cast(BinaryIO, WriteOnly(writer)))
    return writer.finish(diff_id)
