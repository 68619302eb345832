"""The target config in a bundle: zstd alone, or zstd against a source image's config.

An image config is ~1-2 kB of JSON (history, labels, env, the diff_ids) and an update
changes a few fields of it, so with the config of an image the device already has as
a raw-content dictionary it packs to ~150 bytes instead of ~900: on the second corpus's
app update that is 6 % of the whole bundle. The base is named by its image ID (the
config's own digest), so the device finds it among its images and nothing else has to
be trusted: the rebuilt config must still hash to the target's image ID.
See docs/bundle-format.md (content version 3).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import zstandard

from deltaport.errors import FormatError, MissingSourceError

CONFIG_ZSTD_LEVEL = 19
MAX_CONFIG_BYTES = 16 << 20  # a target config larger than this is refused on the device


class ConfigCodec(str, enum.Enum):
    """How the target config is stored in the payload."""

    ZSTD = "zstd"  # zstd frame of the config
    ZSTD_BASE = "zstd-base"  # zstd frame with a source image's config as dictionary

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class PackedConfig:
    """The config as stored, and the image ID of its base (ZSTD_BASE only)."""

    data: bytes
    codec: ConfigCodec
    base: str | None = None


def _compressor(base: bytes | None) -> zstandard.ZstdCompressor:
    if base is None:
        return zstandard.ZstdCompressor(level=CONFIG_ZSTD_LEVEL)
    zdict = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return zstandard.ZstdCompressor(level=CONFIG_ZSTD_LEVEL, dict_data=zdict,
                                    write_dict_id=False)


def pack_config(config: bytes, bases: Sequence[tuple[str, bytes]], *,
                use_base: bool = True) -> PackedConfig:
    """CONFIG packed the smallest way: alone, or against one of BASES (image ID, config).

    Ties keep the plain frame, so a base is named only where it saves bytes.
    """
    best = PackedConfig(_compressor(None).compress(config), ConfigCodec.ZSTD)
    if not use_base:
        return best
    for image_id, base in bases:
        if len(base) > MAX_CONFIG_BYTES:
            continue
        packed = _compressor(base).compress(config)
        if len(packed) < len(best.data):
            best = PackedConfig(packed, ConfigCodec.ZSTD_BASE, image_id)
    return best


def unpack_config(data: bytes, codec: ConfigCodec, base: str | None,
                  configs: Mapping[str, bytes]) -> bytes:
    """The config DATA holds; CONFIGS are the device's image configs by image ID.

    The result is not checked here: the caller compares it with the image ID.

    Raises:
        MissingSourceError: the base image is not on the device.
        FormatError: the frame is corrupt, or unpacks to more than MAX_CONFIG_BYTES.
    """
    base_bytes: bytes | None = None
    if codec is ConfigCodec.ZSTD_BASE:
        if base is None or base not in configs:
            raise MissingSourceError(
                f"the bundle's config is packed against image {base}, which is not on "
                "this device", [str(base)])
        base_bytes = configs[base]
    if base_bytes is None:
        decompressor = zstandard.ZstdDecompressor()
    else:
        decompressor = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(
            base_bytes, dict_type=zstandard.DICT_TYPE_RAWCONTENT))
    try:
        out = decompressor.stream_reader(data).read(MAX_CONFIG_BYTES + 1)
    except zstandard.ZstdError as exc:
        raise FormatError(f"bundle target config is corrupt: {exc}") from exc
    if len(out) > MAX_CONFIG_BYTES:
        raise FormatError(f"bundle target config is larger than {MAX_CONFIG_BYTES} bytes")
    return bytes(out)
