"""Round trips through every transport pair, checked independently with skopeo:
skopeo reads what we wrote, we read what skopeo wrote, diff_ids and image IDs agree."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from deltaport.errors import ImageNotFoundError
from deltaport.oci import Platform, TransportOptions, copy_image, inspect_image, open_source
from tests.fixtures.images import build_image, write_multiplatform_layout, write_oci_layout
from tests.fixtures.services import Registry
from tests.oci import skopeo
from tests.oci.conftest import ImageFiles

TRANSPORTS = ["docker-archive", "oci", "oci-archive", "docker"]


def _target(transport: str, tmp_path: Path, registry: Registry, name: str) -> str:
    return {
        "docker-archive": f"docker-archive:{tmp_path / name}.tar:{name}:v1",
        "oci": f"oci:{tmp_path / name}:v1",
        "oci-archive": f"oci-archive:{tmp_path / name}-oci.tar:v1",
        "docker": registry.ref(f"{name}:v1"),
    }[transport]


@pytest.fixture(scope="module")
def sources(image_files: ImageFiles, module_registry: Registry) -> dict[str, str]:
    """The test image in every transport; the registry copy is pushed by skopeo."""
    pushed = module_registry.ref("source:v1")
    skopeo.copy(image_files.oci, pushed)
    return {
        "docker-archive": image_files.docker_archive,
        "oci": image_files.oci,
        "oci-archive": image_files.oci_archive,
        "docker": pushed,
    }


def _our_view(ref: str) -> tuple[str, list[str], list[str], str]:
    with open_source(ref) as source:
        layers = source.layers()
        return (source.image_id(), [x.diff_id for x in layers], [x.digest for x in layers],
                source.manifest_digest())


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(TRANSPORTS, TRANSPORTS)))
def test_skopeo_reads_what_we_wrote(sources: dict[str, str], image_files: ImageFiles,
                                    module_registry: Registry, tmp_path: Path,
                                    src: str, dst: str) -> None:
    image = image_files.image
    name = f"ours-{src}-to-{dst}"
    target = _target(dst, tmp_path, module_registry, name)
    result = copy_image(sources[src], target)
    image_id, diff_ids, digests, manifest_digest = _our_view(target)
    assert image_id == result.image_id == image.image_id
    assert diff_ids == image.diff_ids
    # skopeo agrees on the config (image ID), diff_ids, layer digests and manifest digest
    assert skopeo.config_digest(target) == image.image_id
    assert skopeo.diff_ids(target) == image.diff_ids
    seen = skopeo.inspect(target)
    assert seen["Layers"] == digests
    if dst != "docker-archive":
        assert seen["Digest"] == manifest_digest == result.manifest_digest
    # and skopeo can copy it out (it verifies every blob on the way)
    skopeo.copy(target, f"oci:{tmp_path / 'check'}:x")
    assert skopeo.diff_ids(f"oci:{tmp_path / 'check'}:x") == image.diff_ids


@pytest.mark.parametrize("dst", TRANSPORTS)
def test_we_read_what_skopeo_wrote(image_files: ImageFiles, module_registry: Registry,
                                   tmp_path: Path, dst: str) -> None:
    target = _target(dst, tmp_path, module_registry, f"theirs-{dst}")
    source = image_files.oci
    if dst == "docker-archive":  # skopeo 1.9 cannot write zstd layers into docker formats
        gzip_only = build_image(compression="gzip")
        assert gzip_only.image_id == image_files.image.image_id
        source = f"oci:{write_oci_layout(tmp_path / 'gzip', gzip_only)}:v1"
    skopeo.copy(source, target)
    info = inspect_image(target)  # reads and verifies every layer
    assert [layer["diff_id"] for layer in info["layers"]] == image_files.image.diff_ids
    assert info["image_id"] == skopeo.config_digest(target)
    assert [layer["digest"] for layer in info["layers"]] == skopeo.inspect(target)["Layers"]
    if dst != "docker-archive":
        assert info["manifest_digest"] == skopeo.inspect(target)["Digest"]


def test_docker_schema2_from_the_registry(module_registry: Registry, tmp_path: Path) -> None:
    image = build_image(variant=1, compression="gzip", manifest="docker")
    write_oci_layout(tmp_path / "docker-s2", image)
    pushed = module_registry.ref("schema2:v1")
    copy_image(f"oci:{tmp_path / 'docker-s2'}:v1", pushed)
    raw = skopeo.skopeo("inspect", skopeo.TLS, "--raw", pushed)
    assert b"application/vnd.docker.distribution.manifest.v2+json" in raw
    info = inspect_image(pushed)
    assert info["manifest_media_type"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert info["manifest_digest"] == image.manifest_digest
    assert info["image_id"] == image.image_id


def test_manifest_list_in_the_registry(module_registry: Registry, tmp_path: Path) -> None:
    amd, arm = build_image(arch="amd64"), build_image(variant=1, arch="arm64")
    write_multiplatform_layout(tmp_path / "multi", [amd, arm])
    ref = module_registry.ref("multi:v1")
    skopeo.copy(f"oci:{tmp_path / 'multi'}:v1", ref, "--all")
    for image, arch in ((amd, "amd64"), (arm, "arm64")):
        options = TransportOptions(platform=Platform("linux", arch))
        info = inspect_image(ref, options, verify=False)
        assert (info["image_id"], info["architecture"]) == (image.image_id, arch)
    missing = TransportOptions(platform=Platform("linux", "riscv64"))
    with pytest.raises(ImageNotFoundError, match=r"linux/riscv64.*linux/amd64, linux/arm64"):
        copy_image(ref, module_registry.ref("multi-copy:v1"), missing)
    with pytest.raises(Exception, match=r"manifest unknown|MANIFEST_UNKNOWN"):
        skopeo.inspect(module_registry.ref("multi-copy:v1"))
