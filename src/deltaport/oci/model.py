"""The image model: descriptors, layers, configs, manifests, indexes, platforms.

Pure code: functions take the bytes of a manifest, index or config, check them and
return values, raising FormatError for malformed input. No I/O here.
"""

from __future__ import annotations

import json
import platform as _platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from deltaport.errors import FormatError, ImageNotFoundError
from deltaport.oci import mediatypes as mt
from deltaport.oci.compression import Compression
from deltaport.oci.digest import check_digest, sha256_digest

MAX_LAYERS = 1000
_MACHINE_TO_ARCH = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", None),
    "arm64": ("arm64", None),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i686": ("386", None),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}


@dataclass(frozen=True)
class Platform:
    """An os/architecture[/variant] an image is built for."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse "os/arch[/variant]".

        Raises:
            FormatError: not of that shape.
        """
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise FormatError(f"platform {text!r} must look like os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls) -> Platform:
        """linux/<this machine's architecture> (linux/amd64 when unknown)."""
        arch, variant = _MACHINE_TO_ARCH.get(_platform.machine().lower(), ("amd64", None))
        return cls("linux", arch, variant)

    def matches(self, other: Platform) -> bool:
        """Whether an image for OTHER satisfies a request for SELF."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if self.variant is None or other.variant is None:
            return True
        return self.variant == other.variant


@dataclass(frozen=True)
class Descriptor:
    """A content-addressed pointer: media type, digest, size (+ annotations, platform)."""

    media_type: str
    digest: str
    size: int
    annotations: tuple[tuple[str, str], ...] = ()
    platform: Platform | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        if self.platform is not None:
            plat = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                plat["variant"] = self.platform.variant
            data["platform"] = plat
        return data

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)


@dataclass(frozen=True)
class Layer:
    """One layer: the stored blob's descriptor and the diff_id of its uncompressed tar."""

    descriptor: Descriptor
    diff_id: str
    uncompressed_size: int | None = None

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return self.descriptor.size

    @property
    def media_type(self) -> str:
        return self.descriptor.media_type

    @property
    def compression(self) -> Compression:
        found = mt.layer_compression(self.media_type)
        if found is None:
            raise FormatError(f"layer {self.digest}: unsupported media type {self.media_type!r}")
        return found


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config deltaport uses, plus the whole parsed document."""

    diff_ids: tuple[str, ...]
    architecture: str
    os: str
    variant: str | None
    raw: dict[str, Any] = field(compare=False, hash=False)

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)


@dataclass(frozen=True)
class Manifest:
    """An image manifest (OCI or Docker v2 schema 2)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    """An OCI index or Docker manifest list."""

    media_type: str
    manifests: tuple[Descriptor, ...]


def load_json(data: bytes, what: str) -> dict[str, Any]:
    """Parse DATA as a JSON object.

    Raises:
        FormatError: not JSON or not an object.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{what}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise FormatError(f"{what}: expected a JSON object")
    return doc


def _parse_platform(value: object) -> Platform | None:
    if not isinstance(value, dict):
        return None
    os_name, arch = value.get("os"), value.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        return None
    variant = value.get("variant")
    return Platform(os_name, arch, variant if isinstance(variant, str) and variant else None)


def parse_descriptor(value: object, what: str) -> Descriptor:
    """A Descriptor from its JSON form.

    Raises:
        FormatError: missing or malformed fields.
    """
    if not isinstance(value, dict):
        raise FormatError(f"{what}: descriptor is not an object")
    media_type = value.get("mediaType")
    size = value.get("size")
    if not isinstance(media_type, str):
        raise FormatError(f"{what}: descriptor has no mediaType")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise FormatError(f"{what}: descriptor has no valid size")
    digest = check_digest(value.get("digest"), what)
    raw_annotations = value.get("annotations") or {}
    if not isinstance(raw_annotations, dict):
        raise FormatError(f"{what}: annotations must be an object")
    annotations = tuple(sorted((str(k), str(v)) for k, v in raw_annotations.items()))
    return Descriptor(media_type, digest, size, annotations, _parse_platform(value.get("platform")))


def manifest_media_type(data: bytes, declared: str | None, what: str) -> str:
    """The media type of a manifest/index document: its mediaType field, else DECLARED,
    else guessed from its shape."""
    doc = load_json(data, what)
    field_type = doc.get("mediaType")
    if isinstance(field_type, str) and field_type:
        return field_type
    if declared and declared in mt.ALL_MANIFESTS:
        return declared
    return mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST


def parse_manifest(data: bytes, media_type: str, what: str) -> Manifest:
    """Check and parse an image manifest.

    Raises:
        FormatError: not an OCI / Docker schema 2 manifest.
    """
    doc = load_json(data, what)
    if media_type not in mt.IMAGE_MANIFESTS:
        raise FormatError(f"{what}: unsupported manifest media type {media_type!r}")
    if doc.get("schemaVersion") != 2:
        raise FormatError(f"{what}: schemaVersion must be 2")
    config = parse_descriptor(doc.get("config"), f"{what} config")
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list):
        raise FormatError(f"{what}: has no layers list")
    if len(raw_layers) > MAX_LAYERS:
        raise FormatError(f"{what}: more than {MAX_LAYERS} layers")
    layers = tuple(parse_descriptor(v, f"{what} layer {i}") for i, v in enumerate(raw_layers))
    return Manifest(media_type, config, layers)


def parse_index(data: bytes, media_type: str, what: str) -> Index:
    """Check and parse an OCI index / Docker manifest list.

    Raises:
        FormatError: malformed.
    """
    doc = load_json(data, what)
    raw = doc.get("manifests")
    if not isinstance(raw, list):
        raise FormatError(f"{what}: has no manifests list")
    if len(raw) > MAX_LAYERS:
        raise FormatError(f"{what}: more than {MAX_LAYERS} entries")
    entries = tuple(parse_descriptor(v, f"{what} entry {i}") for i, v in enumerate(raw))
    return Index(media_type, entries)


def select_platform(index: Index, wanted: Platform, what: str) -> Descriptor:
    """The image manifest in INDEX for WANTED.

    Raises:
        ImageNotFoundError: no entry for that platform; the message lists those there are.
    """
    candidates = [
        d
        for d in index.manifests
        if d.media_type in mt.IMAGE_MANIFESTS and d.platform and wanted.matches(d.platform)
    ]
    exact = [d for d in candidates if d.platform and d.platform.variant == wanted.variant]
    chosen = exact or candidates
    if chosen:
        return chosen[0]
    present = sorted({str(d.platform) for d in index.manifests if d.platform})
    raise ImageNotFoundError(
        f"{what}: no image for platform {wanted} (present: {', '.join(present) or 'none'})"
    )


def parse_config(data: bytes, what: str) -> ImageConfig:
    """Check and parse an image config.

    Raises:
        FormatError: no rootfs.diff_ids, or malformed fields.
    """
    doc = load_json(data, what)
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise FormatError(f"{what}: has no rootfs.diff_ids")
    diff_ids = tuple(check_digest(d, f"{what} diff_id") for d in rootfs["diff_ids"])
    if len(diff_ids) > MAX_LAYERS:
        raise FormatError(f"{what}: more than {MAX_LAYERS} layers")
    arch, os_name, variant = doc.get("architecture"), doc.get("os"), doc.get("variant")
    return ImageConfig(
        diff_ids=diff_ids,
        architecture=arch if isinstance(arch, str) else "",
        os=os_name if isinstance(os_name, str) else "",
        variant=variant if isinstance(variant, str) and variant else None,
        raw=doc,
    )


def pair_layers(manifest: Manifest, config: ImageConfig, what: str) -> list[Layer]:
    """Zip manifest layer descriptors with config diff_ids.

    Raises:
        FormatError: their counts differ, or a layer media type is unknown.
    """
    if len(manifest.layers) != len(config.diff_ids):
        raise FormatError(
            f"{what}: manifest has {len(manifest.layers)} layers but config has "
            f"{len(config.diff_ids)} diff_ids"
        )
    layers = []
    for desc, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
        compression = mt.layer_compression(desc.media_type)
        if compression is None:
            raise FormatError(
                f"{what}: layer {desc.digest} has unsupported type {desc.media_type!r}"
            )
        size = desc.size if compression is Compression.NONE else None
        layers.append(Layer(desc, diff_id, size))
    return layers


def build_manifest(
    config_bytes: bytes, layers: Sequence[Layer], media_type: str
) -> tuple[bytes, Manifest]:
    """Serialize a manifest of MEDIA_TYPE for CONFIG_BYTES and LAYERS (media types are
    rewritten to that manifest's family)."""
    config = Descriptor(mt.config_media_type(media_type), sha256_digest(config_bytes),
                        len(config_bytes))
    descs = tuple(
        Descriptor(mt.layer_media_type(layer.compression, media_type), layer.digest, layer.size,
                   layer.descriptor.annotations)
        for layer in layers
    )
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.to_json(),
        "layers": [d.to_json() for d in descs],
    }
    data = json.dumps(doc, indent=2).encode()
    return data, Manifest(media_type, config, descs)


def choose_manifest_type(layers: Sequence[Layer], preferred: str | None) -> str:
    """PREFERRED if it can name every layer's compression, else OCI."""
    if preferred in mt.IMAGE_MANIFESTS and all(
        mt.manifest_type_supports(preferred, layer.compression) for layer in layers
    ):
        return preferred
    return mt.OCI_MANIFEST
