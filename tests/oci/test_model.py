"""Pure parts: manifests, indexes, platform selection, digests and compression."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deltaport.errors import FormatError, ImageNotFoundError, IntegrityError, TruncatedError
from deltaport.oci import Compression, Platform, detect_compression, sha256_digest
from deltaport.oci.compression import CompressingWriter, decompressing_reader
from deltaport.oci.digest import verifying_reader
from deltaport.oci.model import (
    build_manifest,
    parse_config,
    parse_index,
    parse_manifest,
    select_platform,
)
from tests.fixtures.images import build_image, multiplatform_index

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def test_parse_manifest_and_rebuild_it() -> None:
    image = build_image(compression=["gzip", "zstd", "none"])
    manifest = parse_manifest(image.manifest, image.manifest_type, "m")
    assert [d.digest for d in manifest.layers] == [layer.digest for layer in image.layers]
    config = parse_config(image.config, "c")
    assert list(config.diff_ids) == image.diff_ids
    assert config.platform == Platform("linux", "amd64")


@pytest.mark.parametrize(
    "doc",
    [
        {"schemaVersion": 1},
        {"schemaVersion": 2, "config": {"mediaType": "x", "size": 1, "digest": "sha256:00"}},
        {"schemaVersion": 2, "config": {"mediaType": "x", "size": -1,
                                        "digest": "sha256:" + "0" * 64}, "layers": []},
        {"schemaVersion": 2, "layers": []},
    ],
)
def test_bad_manifests_are_format_errors(doc: dict[str, object]) -> None:
    with pytest.raises(FormatError):
        parse_manifest(json.dumps(doc).encode(), "application/vnd.oci.image.manifest.v1+json", "m")


def test_not_json_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="not valid JSON"):
        parse_manifest(b"\x00garbage", "application/vnd.oci.image.manifest.v1+json", "m")


def test_platform_selection() -> None:
    amd = build_image(arch="amd64")
    arm = build_image(arch="arm64")
    index = parse_index(multiplatform_index([amd, arm]), OCI_INDEX, "i")
    assert select_platform(index, Platform("linux", "arm64"), "x").digest == arm.manifest_digest
    v8 = select_platform(index, Platform("linux", "arm64", "v8"), "x")
    assert v8.digest == arm.manifest_digest
    with pytest.raises(ImageNotFoundError, match=r"linux/s390x.*linux/amd64, linux/arm64"):
        select_platform(index, Platform("linux", "s390x"), "x")


def test_platform_parse() -> None:
    assert Platform.parse("linux/arm/v7") == Platform("linux", "arm", "v7")
    with pytest.raises(FormatError):
        Platform.parse("linux")


def test_build_manifest_rewrites_layer_types_to_the_manifest_family() -> None:
    image = build_image(compression="gzip", manifest="oci")
    from deltaport.oci.model import pair_layers

    layers = pair_layers(parse_manifest(image.manifest, image.manifest_type, "m"),
                         parse_config(image.config, "c"), "i")
    data, manifest = build_manifest(image.config, layers,
                                    "application/vnd.docker.distribution.manifest.v2+json")
    assert {d.media_type for d in manifest.layers} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"}
    assert manifest.config.digest == image.image_id
    config_type = json.loads(data)["config"]["mediaType"]
    assert config_type == "application/vnd.docker.container.image.v1+json"


def test_verifying_reader_accepts_good_and_refuses_bad() -> None:
    data = b"hello layer" * 1000
    good = verifying_reader(io.BytesIO(data), sha256_digest(data), len(data), "blob X")
    assert good.read() == data
    bad = verifying_reader(io.BytesIO(data[:-1] + b"!"), sha256_digest(data), len(data), "blob X")
    with pytest.raises(IntegrityError, match="blob X"):
        bad.read()
    short = verifying_reader(io.BytesIO(data[:-5]), sha256_digest(data), len(data), "blob X")
    with pytest.raises(TruncatedError, match="ends after"):
        short.read()
    long = verifying_reader(io.BytesIO(data + b"x"), sha256_digest(data), len(data), "blob X")
    with pytest.raises(IntegrityError, match="longer"):
        long.read()


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=200_000), st.sampled_from(list(Compression)))
def test_compression_round_trip(data: bytes, compression: Compression) -> None:
    out = io.BytesIO()
    writer = CompressingWriter(out, compression)
    writer.write(data)
    writer.close()
    stored = out.getvalue()
    if data:
        detected = detect_compression(stored)
        assert detected is compression or (compression is Compression.NONE)
    assert decompressing_reader(io.BytesIO(stored), compression, "t").read() == data


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_corrupt_compressed_data_is_a_format_error(compression: Compression) -> None:
    out = io.BytesIO()
    writer = CompressingWriter(out, compression)
    writer.write(b"x" * 100_000)
    writer.close()
    stored = out.getvalue()
    with pytest.raises((FormatError, TruncatedError)):
        decompressing_reader(io.BytesIO(stored[: len(stored) // 2]), compression, "t").read()
