"""The target config packed alone or against a source image's config (delta.configpack)."""

from __future__ import annotations

import hashlib
import json

import pytest

from deltaport.delta.configpack import (
    MAX_CONFIG_BYTES,
    ConfigCodec,
    pack_config,
    unpack_config,
)
from deltaport.delta.content import Part, build_content, parse_content
from deltaport.errors import FormatError, MissingSourceError


def _config(version: int) -> bytes:
    history = [{"created": f"2026-01-0{i + 1}T00:00:00Z", "created_by": f"RUN step {i} " * 8}
               for i in range(6)]
    return json.dumps({
        "architecture": "amd64", "os": "linux", "created": f"2026-02-0{version}T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin", f"APP_VERSION={version}"],
                   "Labels": {"org.opencontainers.image.version": f"1.{version}"}},
        "history": history,
        "rootfs": {"type": "layers", "diff_ids": [
            "sha256:" + hashlib.sha256(f"layer {i} {version if i == 5 else 0}".encode())
            .hexdigest() for i in range(6)]},
    }).encode()


def _id(config: bytes) -> str:
    return "sha256:" + hashlib.sha256(config).hexdigest()


def test_a_config_against_the_old_one_is_a_fraction_and_unpacks_exactly() -> None:
    old, new = _config(1), _config(2)
    plain = pack_config(new, [])
    packed = pack_config(new, [(_id(_config(3)), b"unrelated " * 5), (_id(old), old)])
    assert plain.codec is ConfigCodec.ZSTD and plain.base is None
    assert packed.codec is ConfigCodec.ZSTD_BASE and packed.base == _id(old)
    assert len(packed.data) * 3 < len(plain.data), (len(packed.data), len(plain.data))
    assert unpack_config(packed.data, packed.codec, packed.base, {_id(old): old}) == new
    assert unpack_config(plain.data, plain.codec, None, {}) == new
    assert pack_config(new, [(_id(old), old)], use_base=False).codec is ConfigCodec.ZSTD


def test_a_base_that_does_not_help_is_not_named() -> None:
    assert pack_config(_config(1), [(_id(b"{}"), b"{}")]).codec is ConfigCodec.ZSTD


def test_a_missing_base_names_the_image_and_a_corrupt_frame_is_a_format_error() -> None:
    old, new = _config(1), _config(2)
    packed = pack_config(new, [(_id(old), old)])
    with pytest.raises(MissingSourceError) as err:
        unpack_config(packed.data, packed.codec, packed.base, {_id(new): new})
    assert err.value.missing == [_id(old)] and _id(old) in str(err.value)
    with pytest.raises(FormatError, match="corrupt"):
        unpack_config(packed.data[:-3] + b"xyz", packed.codec, packed.base, {_id(old): old})
    other = b"Z" * len(old)  # another dictionary under that name: other bytes, or an error
    try:
        wrong = unpack_config(packed.data, packed.codec, packed.base, {_id(old): other})
    except FormatError:
        wrong = b""
    assert wrong != new


def test_a_config_bomb_is_refused_at_its_named_limit() -> None:
    bomb = pack_config(b"\0" * (MAX_CONFIG_BYTES + 1), [])
    with pytest.raises(FormatError, match=str(MAX_CONFIG_BYTES)):
        unpack_config(bomb.data, bomb.codec, None, {})


def _content(codec: ConfigCodec, base: str | None) -> dict[str, object]:
    return build_content(target_name="app:v2", image_id=_id(b"x"), target_size=1,
                         config=Part(0, 10), layers=[], config_codec=codec, config_base=base)


def test_content_names_version_3_only_where_the_config_has_a_base() -> None:
    base = _id(b"old")
    plain, based = _content(ConfigCodec.ZSTD, None), _content(ConfigCodec.ZSTD_BASE, base)
    assert plain["version"] == 2 and based["version"] == 3
    for doc in (plain, based):
        doc["layers"] = [{"encoding": "patch", "kind": "full", "offset": 10, "length": 1,
                          "sources": []}]
    assert parse_content(based).config_base == base
    assert parse_content(plain).config_codec is ConfigCodec.ZSTD
    forged = dict(based, version=2)  # a version-2 reader never meets a base
    with pytest.raises(FormatError, match="codec 'zstd-base'"):
        parse_content(forged)
    bad = dict(based, config={"offset": 0, "length": 10, "codec": "zstd-base", "base": "x"})
    with pytest.raises(FormatError, match=r"config\.base"):
        parse_content(bad)
    with pytest.raises(FormatError, match="codec 'lz4'"):
        parse_content(dict(based, config={"offset": 0, "length": 1, "codec": "lz4"}))
