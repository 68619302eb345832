"""Image-level deltas: turn the content of source images into a target image.

This is the orchestrator over three pure-ish parts: ``deltaport.oci`` reads and writes
images, the layer engine (``deltaport.delta``) encodes and rebuilds one layer, and
``deltaport.bundle`` packs and signs the result. Everything that touches disk or
network for an image delta happens here; the plan (which layer is sent how) is a
pure function of the target's and the sources' diff_ids.

A bundle's ``content`` object (signed with the index) is::

    {
      "kind": "deltaport.image-delta", "version": 1,
      "target": {"name": "app:v2", "image_id": "sha256:…", "config_member": "config.json",
                 "diff_ids": [...], "size": <uncompressed bytes>},
      "sources": ["sha256:…", ...],        # every source diff_id the device must have
      "devices": ["dev-1", ...], "deployment": "…",   # optional, added by the hub
      "layers": [
        {"diff_id": "sha256:…", "size": N, "encoding": "source"},         # device has it
        {"diff_id": "sha256:…", "size": N, "encoding": "patch", "member": "layer-1.patch",
         "sources": ["sha256:…", ...], "kind": "delta" | "full"}
      ]
    }
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from deltaport.bundle import BundleReader, BundleWriter
from deltaport.delta import (
    DeltaConfig,
    SourceLayer,
    apply_layer_patch,
    build_layer_patch,
    read_patch_requirements,
)
from deltaport.errors import FormatError, IntegrityError, MissingSourceError
from deltaport.oci import (
    ImageSource,
    Transport,
    TransportOptions,
    open_destination,
    open_source,
    parse_reference,
)

CONTENT_KIND = "deltaport.image-delta"
CONTENT_VERSION = 1
CONFIG_MEMBER = "config.json"
COPY_BUFSIZE = 1 << 20

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
    size: int  # uncompressed layer bytes
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


def _target_name(ref: str) -> str:
    """The repository:tag a device stores the target as, without the registry host.

    "docker://hub:5000/demo/app:v2" -> "demo/app:v2"; "docker-archive:x.tar:app:v2" ->
    "app:v2"; "oci:dir:v2" -> "dir:v2" (a layout has no repository name).
    """
    parsed = parse_reference(ref)
    name = parsed.name
    if name is not None and parsed.transport is Transport.DOCKER:
        return f"{name.repository}:{name.tag}" if name.tag else name.repository
    if name is not None:
        return name.familiar
    stem = parsed.path.stem if parsed.path is not None else "image"
    return f"{stem}:{parsed.tag or 'latest'}"


class LayerSpool:
    """Uncompressed copies of source layers on local disk, by diff_id.

    The layer engine needs random access into source layers; registries and archives
    give us streams (gzip cannot seek). Each needed layer is streamed once to a file in
    a private temp dir (verified against its diff_id by ``open_layer``) and removed with
    the spool. Memory stays bounded: only a copy buffer is held.
    """

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._paths: dict[str, Path] = {}

    def ensure(self, source: ImageSource, layer: Any) -> Path:
        diff_id: str = layer.diff_id
        path = self._paths.get(diff_id)
        if path is not None:
            return path
        path = self._dir / (diff_id.replace(":", "-") + ".tar")
        tmp = path.with_suffix(".part")
        with source.open_layer(layer) as stream, open(tmp, "wb") as out:
            shutil.copyfileobj(stream, out, COPY_BUFSIZE)
        tmp.replace(path)
        self._paths[diff_id] = path
        return path


@contextmanager
def _scratch_dir(parent: Path | None) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="deltaport-", dir=parent) as d:
        yield Path(d)


def _index_sources(sources: Sequence[ImageSource]) -> dict[str, tuple[ImageSource, Any]]:
    """Map every source layer's diff_id to (the image that has it, its layer)."""
    found: dict[str, tuple[ImageSource, Any]] = {}
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
) -> DeltaSummary:
    """Build one bundle that turns the content of all ``source_refs`` into ``target_ref``.

    With no sources the bundle is self-contained (every layer sent in full, compressed).
    ``extra_content`` adds signed fields to the bundle's content (the hub puts
    ``devices`` and ``deployment`` there); it cannot replace the image-delta fields.
    Raises DeltaportError subclasses from the transports, the engine and the bundle writer.
    """
    opts = options or TransportOptions()
    cfg = config or DeltaConfig()
    with ExitStack() as stack:
        target = stack.enter_context(open_source(target_ref, opts))
        sources = [stack.enter_context(open_source(r, opts)) for r in source_refs]
        work = stack.enter_context(_scratch_dir(scratch))
        spool = LayerSpool(work / "sources")
        (work / "sources").mkdir()
        by_diff_id = _index_sources(sources)
        config_bytes = target.config_bytes()
        target_layers = target.layers()
        plans = plan_layers([la.diff_id for la in target_layers], set(by_diff_id))
        source_layers = [
            SourceLayer(diff_id=d, path=spool.ensure(src, layer))
            for d, (src, layer) in by_diff_id.items()
            if any(p.encoding == "patch" for p in plans)
        ]
        writer = stack.enter_context(BundleWriter(out))
        writer.add_member(CONFIG_MEMBER, config_bytes, media_type="application/json")
        results: list[LayerResult] = []
        for plan, layer in zip(plans, target_layers, strict=True):
            if progress:
                progress(f"layer {plan.index + 1}/{len(plans)}", plan.index, len(plans))
            results.append(
                _encode_layer(plan, layer, target, source_layers, writer, work, cfg)
            )
        content = {
            **dict(extra_content or {}),
            **_bundle_content(target_ref, target.image_id(), target_layers, results),
        }
        info = writer.finish(content, signing_key)
    return DeltaSummary(
        bundle=out,
        bundle_bytes=int(info.size),
        target_name=_target_name(target_ref),
        image_id=target.image_id(),
        target_size=sum(r.size for r in results),
        layers=tuple(results),
    )


def _encode_layer(
    plan: LayerPlan,
    layer: Any,
    target: ImageSource,
    sources: Sequence[SourceLayer],
    writer: BundleWriter,
    work: Path,
    cfg: DeltaConfig,
) -> LayerResult:
    """Encode one target layer: nothing for a layer the device has, else a patch member."""
    size = int(layer.uncompressed_size or 0) if hasattr(layer, "uncompressed_size") else 0
    if plan.encoding == "source":
        return LayerResult(plan.index, plan.diff_id, "source", "source", size, 0)
    target_tar = work / f"target-{plan.index}.tar"
    with target.open_layer(layer) as stream, open(target_tar, "wb") as f:
        shutil.copyfileobj(stream, f, COPY_BUFSIZE)
    size = target_tar.stat().st_size
    patch_path = work / f"layer-{plan.index}.patch"
    with open(patch_path, "wb") as patch_out:
        stats = build_layer_patch(target_tar, sources, patch_out, config=cfg)
    member = f"layer-{plan.index}.patch"
    with open(patch_path, "rb") as patch_in:
        writer.add_member(member, patch_in, media_type="application/vnd.deltaport.layer-patch")
    patch_bytes = patch_path.stat().st_size
    target_tar.unlink()
    patch_path.unlink()
    stats_json = _stats_to_json(stats)
    kind = str(stats_json.get("kind", "delta"))
    return LayerResult(plan.index, plan.diff_id, "patch", kind, size, patch_bytes, stats_json)


def _stats_to_json(stats: Any) -> dict[str, Any]:
    if hasattr(stats, "to_json"):
        return dict(stats.to_json())
    if hasattr(stats, "__dataclass_fields__"):
        import dataclasses

        return {
            k: v
            for k, v in dataclasses.asdict(stats).items()
            if isinstance(v, int | float | str | list | dict)
        }
    return {}


def _bundle_content(
    target_ref: str, image_id: str, layers: Sequence[Any], results: Sequence[LayerResult]
) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    needed: set[str] = set()
    for r in results:
        entry: dict[str, Any] = {"diff_id": r.diff_id, "size": r.size, "encoding": r.encoding}
        if r.encoding == "source":
            needed.add(r.diff_id)
        else:
            srcs = list(r.stats.get("required_sources", []))
            needed.update(srcs)
            entry.update(member=f"layer-{r.index}.patch", sources=srcs, kind=r.kind)
        entries.append(entry)
    return {
        "kind": CONTENT_KIND,
        "version": CONTENT_VERSION,
        "target": {
            "name": _target_name(target_ref),
            "image_id": image_id,
            "config_member": CONFIG_MEMBER,
            "diff_ids": [la.diff_id for la in layers],
            "size": sum(r.size for r in results),
        },
        "sources": sorted(needed),
        "layers": entries,
    }


@dataclass(frozen=True)
class BundleContent:
    """The validated ``content`` object of an image-delta bundle."""

    image_id: str
    target_name: str
    diff_ids: tuple[str, ...]
    sources: tuple[str, ...]
    layers: tuple[Mapping[str, Any], ...]


def parse_content(content: Mapping[str, Any]) -> BundleContent:
    """Pure: check the structure of a bundle's content object.

    Raises:
        FormatError: not an image-delta bundle, or a field is missing or of the wrong type.
    """
    if content.get("kind") != CONTENT_KIND:
        raise FormatError(f"bundle is not an image delta (kind {content.get('kind')!r})")
    if content.get("version") != CONTENT_VERSION:
        raise FormatError(f"unsupported image-delta content version {content.get('version')!r}")
    try:
        target = content["target"]
        layers = tuple(content["layers"])
        diff_ids = tuple(str(d) for d in target["diff_ids"])
        sources = tuple(str(s) for s in content["sources"])
        image_id = str(target["image_id"])
        name = str(target["name"])
    except (KeyError, TypeError) as exc:
        raise FormatError(f"bundle content is malformed: missing {exc}") from exc
    if [str(la.get("diff_id")) for la in layers] != list(diff_ids):
        raise FormatError("bundle content is malformed: layers do not match target diff_ids")
    for la in layers:
        if la.get("encoding") not in ("source", "patch"):
            raise FormatError(f"bundle layer has unknown encoding {la.get('encoding')!r}")
        if la.get("encoding") == "patch" and not isinstance(la.get("member"), str):
            raise FormatError("bundle layer is missing its patch member")
    return BundleContent(image_id, name, diff_ids, sources, layers)


def missing_sources(needed: Sequence[str], available: set[str]) -> list[str]:
    """Pure: which needed source diff_ids are not available, in bundle order."""
    return [d for d in needed if d not in available]


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
    signature (when ``trusted_keys`` is given), its content, and that every source
    layer it needs is present. The destination is committed (manifest last) only after
    every layer hashed to its diff_id and the config to the image ID.

    Raises:
        SignatureError, FormatError, TruncatedError: a bad bundle.
        MissingSourceError: source layers the device lacks, by diff_id.
        IntegrityError: a rebuilt layer or the config does not match its digest.
    """
    opts = options or TransportOptions()
    with ExitStack() as stack:
        reader = stack.enter_context(BundleReader(bundle, trusted_keys=trusted_keys))
        content = parse_content(reader.index.content)
        sources = [stack.enter_context(open_source(r, opts)) for r in source_refs]
        by_diff_id = _index_sources(sources)
        missing = missing_sources(content.sources, set(by_diff_id))
        if missing:
            raise MissingSourceError(
                "the bundle needs source layers that are not on this device: "
                + ", ".join(missing),
                missing,
            )
        config_bytes = _read_member(reader, CONFIG_MEMBER)
        if _sha256_digest(config_bytes) != content.image_id:
            raise IntegrityError(
                f"bundle config does not hash to the image ID {content.image_id}"
            )
        work = stack.enter_context(_scratch_dir(scratch))
        (work / "sources").mkdir()
        spool = LayerSpool(work / "sources")
        dest = stack.enter_context(open_destination(dest_ref, opts))
        written: list[Any] = []
        patched = 0
        for i, entry in enumerate(content.layers):
            if progress:
                progress(f"layer {i + 1}/{len(content.layers)}", i, len(content.layers))
            if entry["encoding"] == "source":
                src, layer = by_diff_id[str(entry["diff_id"])]
                with src.open_blob(layer) as blob:
                    written.append(dest.put_blob(layer, blob))
                continue
            patched += 1
            written.append(_rebuild_layer(reader, bundle, entry, by_diff_id, spool, dest))
        manifest_digest = dest.commit(config_bytes, written)
    return ApplySummary(
        destination=dest_ref,
        image_id=content.image_id,
        manifest_digest=str(manifest_digest),
        layers_patched=patched,
        layers_from_source=len(content.layers) - patched,
    )


def _read_member(reader: BundleReader, name: str, limit: int = 16 << 20) -> bytes:
    with reader.open_member(name) as stream:
        data: bytes = stream.read(limit + 1)
        if len(data) > limit:
            raise FormatError(f"bundle member {name} is larger than {limit} bytes")
        stream.read()  # drain to EOF so the member digest is checked
    return data


def _rebuild_layer(
    reader: BundleReader,
    bundle: Path,
    entry: Mapping[str, Any],
    by_diff_id: Mapping[str, tuple[ImageSource, Any]],
    spool: LayerSpool,
    dest: Any,
) -> Any:
    """Apply one layer patch, streaming into the destination's layer writer.

    The engine needs a seekable patch; the member is read in place from the bundle file
    through a bounded window, after its digest was checked against the signed index.
    """
    member = reader.index.member(str(entry["member"]))
    diff_id = str(entry["diff_id"])
    with open(bundle, "rb") as f:
        view = _MemberView(f, reader.index.payload_offset + member.offset, member.size)
        patch = cast(BinaryIO, io.BufferedReader(view, COPY_BUFSIZE))
        _verify_member(patch, member.digest, member.name)
        needed = list(read_patch_requirements(patch).sources)
        absent = [d for d in needed if d not in by_diff_id]
        if absent:
            raise MissingSourceError(
                f"layer {diff_id} needs source layers that are not on this device: "
                + ", ".join(absent),
                absent,
            )
        paths = {d: spool.ensure(*by_diff_id[d]) for d in needed}
        writer = dest.layer_writer()
        patch.seek(0)
        apply_layer_patch(patch, paths, cast(BinaryIO, _WriteOnly(writer)))
    return writer.finish(diff_id)


def _verify_member(view: BinaryIO, digest: str, name: str) -> None:
    h = hashlib.sha256()
    view.seek(0)
    while chunk := view.read(COPY_BUFSIZE):
        h.update(chunk)
    if "sha256:" + h.hexdigest() != digest:
        raise IntegrityError(f"bundle member {name} does not match its signed digest")
    view.seek(0)


class _MemberView(io.RawIOBase):
    """A read-only, seekable window [start, start+size) of an open file."""

    def __init__(self, f: BinaryIO, start: int, size: int) -> None:
        super().__init__()
        self._f, self._start, self._size, self._pos = f, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._size - self._pos)
        n = left if n is None or n < 0 else min(n, left)
        if n == 0:
            return b""
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        self._pos += len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _WriteOnly:
    """Adapts a layer writer (write/finish) to the BinaryIO the engine writes into."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def write(self, data: bytes) -> int:
        self._writer.write(data)
        return len(data)

    def flush(self) -> None:
        return None


def load_bundle_summary(bundle: Path) -> dict[str, Any]:
    """The content object of a bundle, unverified (for `deltaport bundle show`-like uses)."""
    with BundleReader(bundle) as reader:
        return dict(json.loads(json.dumps(reader.index.content)))
