"""The image-delta ``content`` document a bundle carries in its signed index. Pure.

Version 2 packs the target config and every layer patch into ONE bundle
member, ``payload``, because for small updates per-member tar headers and padding cost
more than the patches themselves. Nothing that the signed target config already says
is repeated: layer diff_ids come from the config (verified against the image ID)::

    {
      "kind": "deltaport.image-delta", "version": 2,
      "target": {"name": "demo/app:v2", "image_id": "sha256:…", "size": <layer bytes>},
      "payload": "payload",                      # the bundle member holding the parts below
      "config": {"offset": 0, "length": N, "codec": "zstd"},
      "sources": ["sha256:…", …],                # every source diff_id the device must have
      "layers": [                                # one per target layer, config order
        {"encoding": "source", "source": 3},     # the device has it: sources[3]
        {"encoding": "patch", "kind": "delta" | "full",
         "offset": O, "length": L, "sources": [0, 2]}   # indexes into "sources"
      ],
      "devices": ["dev-1", …], "deployment": "…"   # optional, added by the hub
    }

Version 3 is version 2 whose config may be packed against a source image's config
(``deltaport.delta.configpack``): ``"config": {…, "codec": "zstd-base", "base":
"sha256:<image ID>"}``. A writer uses version 3 only where it does that, so a bundle
with a plain config stays readable by version-2 readers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deltaport.delta.configpack import ConfigCodec
from deltaport.errors import FormatError

CONTENT_KIND = "deltaport.image-delta"
CONTENT_VERSION = 3  # written where the config has a base; else PLAIN_CONFIG_VERSION
PLAIN_CONFIG_VERSION = 2
READ_VERSIONS = (PLAIN_CONFIG_VERSION, CONTENT_VERSION)
PAYLOAD_MEMBER = "payload"
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")
MAX_LAYERS = 1000
MAX_SOURCES = 10_000


@dataclass(frozen=True)
class Part:
    """A byte range of the payload member."""

    offset: int
    length: int


@dataclass(frozen=True)
class LayerEntry:
    """How one target layer is rebuilt: from a source the device has, or from a patch."""

    encoding: str  # "source" | "patch"
    kind: str = "source"  # "source" | "delta" | "full"
    part: Part | None = None
    sources: tuple[str, ...] = ()  # source diff_ids the patch reads


@dataclass(frozen=True)
class BundleContent:
    """The validated content of an image-delta bundle."""

    image_id: str
    target_name: str
    target_size: int
    payload: str
    config: Part
    sources: tuple[str, ...]
    layers: tuple[LayerEntry, ...]
    config_codec: ConfigCodec = ConfigCodec.ZSTD
    config_base: str | None = None  # image ID of the config it is packed against


def build_content(
    *,
    target_name: str,
    image_id: str,
    target_size: int,
    config: Part,
    layers: Sequence[LayerEntry],
    config_codec: ConfigCodec = ConfigCodec.ZSTD,
    config_base: str | None = None,
) -> dict[str, Any]:
    """The content document for these layers (sources listed once, referenced by index)."""
    sources: list[str] = []
    for entry in layers:
        for d in entry.sources:
            if d not in sources:
                sources.append(d)
    docs: list[dict[str, Any]] = []
    for entry in layers:
        if entry.encoding == "source" or entry.part is None:
            docs.append({"encoding": "source", "source": sources.index(entry.sources[0])})
            continue
        docs.append({
            "encoding": "patch",
            "kind": entry.kind,
            "offset": entry.part.offset,
            "length": entry.part.length,
            "sources": [sources.index(d) for d in entry.sources],
        })
    config_doc: dict[str, Any] = {
        "offset": config.offset, "length": config.length, "codec": str(config_codec)}
    if config_codec is ConfigCodec.ZSTD_BASE:
        config_doc["base"] = config_base
    return {
        "kind": CONTENT_KIND,
        "version": PLAIN_CONFIG_VERSION if config_codec is ConfigCodec.ZSTD else CONTENT_VERSION,
        "target": {"name": target_name, "image_id": image_id, "size": target_size},
        "payload": PAYLOAD_MEMBER,
        "config": config_doc,
        "sources": sources,
        "layers": docs,
    }


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FormatError(f"bundle content: {where} must be a non-negative integer")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise FormatError(f"bundle content: {where} must be a non-empty string")
    return value


def _part(doc: Any, where: str) -> Part:
    if not isinstance(doc, Mapping):
        raise FormatError(f"bundle content: {where} must be an object")
    offset = _int(doc.get("offset"), f"{where}.offset")
    return Part(offset, _int(doc.get("length"), f"{where}.length"))


def _layer(doc: Any, i: int, sources: Sequence[str]) -> LayerEntry:
    where = f"layers[{i}]"
    if not isinstance(doc, Mapping):
        raise FormatError(f"bundle content: {where} must be an object")
    encoding = doc.get("encoding")
    if encoding == "source":
        ref = doc.get("source")
        if not isinstance(ref, int) or isinstance(ref, bool) or not 0 <= ref < len(sources):
            raise FormatError(f"bundle content: {where}.source must index the sources list")
        return LayerEntry("source", sources=(sources[ref],))
    if encoding != "patch":
        raise FormatError(f"bundle content: {where} has unknown encoding {encoding!r}")
    kind = doc.get("kind")
    if kind not in ("delta", "full"):
        raise FormatError(f"bundle content: {where} has unknown kind {kind!r}")
    refs = doc.get("sources")
    if not isinstance(refs, list) or not all(
        isinstance(r, int) and not isinstance(r, bool) and 0 <= r < len(sources) for r in refs
    ):
        raise FormatError(f"bundle content: {where}.sources must index the sources list")
    return LayerEntry("patch", str(kind), _part(doc, where), tuple(sources[r] for r in refs))


def parse_content(content: Mapping[str, Any]) -> BundleContent:
    """Check the structure of a bundle's content document.

    Raises:
        FormatError: not an image-delta bundle of this version, or a malformed field.
    """
    if content.get("kind") != CONTENT_KIND:
        raise FormatError(f"bundle is not an image delta (kind {content.get('kind')!r})")
    version = content.get("version")
    if version not in READ_VERSIONS or isinstance(version, bool):
        raise FormatError(
            f"bundle content version {version!r} is not supported "
            f"(this deltaport reads versions {', '.join(map(str, READ_VERSIONS))})"
        )
    target = content.get("target")
    if not isinstance(target, Mapping):
        raise FormatError("bundle content: target must be an object")
    sources = content.get("sources")
    if not isinstance(sources, list) or len(sources) > MAX_SOURCES:
        raise FormatError("bundle content: sources must be a list of diff_ids")
    source_ids = tuple(_str(s, "sources[]") for s in sources)
    layers = content.get("layers")
    if not isinstance(layers, list) or not layers or len(layers) > MAX_LAYERS:
        raise FormatError(f"bundle content: layers must be a list of 1 to {MAX_LAYERS}")
    codec, base = _config_codec(content.get("config"), version)
    config = content.get("config")
    return BundleContent(
        image_id=_str(target.get("image_id"), "target.image_id"),
        target_name=_str(target.get("name"), "target.name"),
        target_size=_int(target.get("size", 0), "target.size"),
        payload=_str(content.get("payload"), "payload"),
        config=_part(config, "config"),
        sources=source_ids,
        layers=tuple(_layer(d, i, source_ids) for i, d in enumerate(layers)),
        config_codec=codec,
        config_base=base,
    )


def _config_codec(config: Any, version: Any) -> tuple[ConfigCodec, str | None]:
    """The config part's codec and base; version 2 knows only plain zstd."""
    if not isinstance(config, Mapping):
        raise FormatError("bundle content: config must be an object")
    allowed = (ConfigCodec.ZSTD,) if version == PLAIN_CONFIG_VERSION else tuple(ConfigCodec)
    try:
        codec = ConfigCodec(config.get("codec"))
    except ValueError:
        codec = None
    if codec not in allowed:
        raise FormatError(f"bundle content: config codec {config.get('codec')!r} is not one "
                          f"of {', '.join(map(str, allowed))} (content version {version})")
    if codec is ConfigCodec.ZSTD:
        return codec, None
    base = config.get("base")
    if not isinstance(base, str) or not _IMAGE_ID.fullmatch(base):
        raise FormatError("bundle content: config.base must be an image ID (sha256:<64 hex>)")
    return codec, base


def check_layers_match_config(content: BundleContent, config_diff_ids: Sequence[str]) -> None:
    """The content describes exactly the layers of the (verified) target config.

    Raises:
        FormatError: a different number of layers, or a kept layer that is not the
            config's layer at that position.
    """
    if len(config_diff_ids) != len(content.layers):
        raise FormatError(
            f"bundle describes {len(content.layers)} layers, the target config has "
            f"{len(config_diff_ids)}"
        )
    for i, (diff_id, entry) in enumerate(zip(config_diff_ids, content.layers, strict=True)):
        if entry.encoding == "source" and entry.sources != (diff_id,):
            raise FormatError(f"bundle layer {i} names {entry.sources[0]}, config has {diff_id}")


def missing_sources(needed: Sequence[str], available: set[str]) -> list[str]:
    """Which needed source diff_ids are not available, in order."""
    return [d for d in needed if d not in available]
