"""File transports (oci, oci-archive, docker-archive both layouts): read, write, round
trip, build through LayerWriter, and refuse bad input without leaving partial output."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from deltaport.errors import (
    FormatError,
    ImageNotFoundError,
    IntegrityError,
    StorageError,
    TruncatedError,
)
from deltaport.oci import (
    Platform,
    TransportOptions,
    copy_image,
    inspect_image,
    open_destination,
    open_source,
)
from tests.fixtures.images import (
    Entry,
    TestImage,
    build_image,
    layer_tar,
    write_docker_archive,
    write_multiplatform_layout,
    write_oci_layout,
)
from tests.oci.conftest import ImageFiles

FORMS = ["oci", "oci_archive", "docker_archive", "docker_archive_oci"]


def _ref(files: ImageFiles, form: str) -> str:
    return str(getattr(files, form))


def _dest(tmp_path: Path, form: str) -> str:
    return {
        "oci": f"oci:{tmp_path / 'out-layout'}:copied",
        "oci_archive": f"oci-archive:{tmp_path / 'out-oci.tar'}:copied",
        "docker_archive": f"docker-archive:{tmp_path / 'out-docker.tar'}:copied:v2",
        "docker_archive_oci": f"docker-archive:{tmp_path / 'out-docker2.tar'}",
    }[form]


def _assert_same_image(ref: str, image: TestImage) -> None:
    with open_source(ref) as source:
        assert source.image_id() == image.image_id
        assert source.config_bytes() == image.config
        layers = source.layers()
        assert [layer.diff_id for layer in layers] == image.diff_ids
        for layer, expected in zip(layers, image.layers, strict=True):
            with source.open_layer(layer) as tar:
                assert tar.read() == expected.tar


@pytest.mark.parametrize("form", FORMS)
def test_reads_every_local_form(image_files: ImageFiles, form: str) -> None:
    _assert_same_image(_ref(image_files, form), image_files.image)


def test_oci_source_keeps_stored_blobs_and_manifest(image_files: ImageFiles) -> None:
    image = image_files.image
    with open_source(image_files.oci) as source:
        assert source.manifest_bytes() == (image.manifest, image.manifest_type)
        assert source.manifest_digest() == image.manifest_digest
        assert [layer.compression.value for layer in source.layers()] == ["gzip", "zstd", "none"]
        for layer, expected in zip(source.layers(), image.layers, strict=True):
            with source.open_blob(layer) as blob:
                assert blob.read() == expected.blob


@pytest.mark.parametrize("src", FORMS)
@pytest.mark.parametrize("dst", ["oci", "oci_archive", "docker_archive"])
def test_local_round_trips(image_files: ImageFiles, tmp_path: Path, src: str, dst: str) -> None:
    result = copy_image(_ref(image_files, src), _dest(tmp_path, dst))
    assert result.image_id == image_files.image.image_id
    _assert_same_image(_dest(tmp_path, dst), image_files.image)


def test_oci_to_oci_keeps_the_manifest_verbatim(image_files: ImageFiles, tmp_path: Path) -> None:
    result = copy_image(image_files.oci, f"oci:{tmp_path / 'l'}:v1")
    assert result.manifest_digest == image_files.image.manifest_digest


def test_docker_archive_output_is_classic_and_uncompressed(
    image_files: ImageFiles, tmp_path: Path
) -> None:
    copy_image(image_files.oci, f"docker-archive:{tmp_path / 'd.tar'}:team/app:v3")
    with tarfile.open(tmp_path / "d.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest[0]["RepoTags"] == ["team/app:v3"]
        for name, diff_id in zip(manifest[0]["Layers"], image_files.image.diff_ids, strict=True):
            data = tar.extractfile(name).read()  # type: ignore[union-attr]
            assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id


def test_second_copy_into_a_layout_skips_existing_blobs(
    image_files: ImageFiles, tmp_path: Path
) -> None:
    first = copy_image(image_files.oci, f"oci:{tmp_path / 'l'}:a")
    second = copy_image(image_files.docker_archive, f"oci:{tmp_path / 'l'}:b")
    assert first.copied == 3
    assert second.skipped == 1  # the uncompressed layer is stored as is in both
    index = json.loads((tmp_path / "l" / "index.json").read_text())
    tags = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert tags == ["a", "b"]
    _assert_same_image(f"oci:{tmp_path / 'l'}:a", image_files.image)
    _assert_same_image(f"oci:{tmp_path / 'l'}:b", image_files.image)


def _build_through_writer(ref: str, image: TestImage) -> str:
    with open_destination(ref) as dest:
        layers = []
        for layer in image.layers:
            writer = dest.layer_writer()
            for i in range(0, len(layer.tar), 4096):
                writer.write(layer.tar[i:i + 4096])
            layers.append(writer.finish(layer.diff_id))
        return dest.commit(image.config, layers)


@pytest.mark.parametrize("dst", ["oci", "oci_archive", "docker_archive"])
def test_layer_writer_builds_an_image(image_files: ImageFiles, tmp_path: Path, dst: str) -> None:
    ref = _dest(tmp_path, dst)
    digest = _build_through_writer(ref, image_files.image)
    _assert_same_image(ref, image_files.image)
    with open_source(ref) as source:
        assert source.manifest_digest() == digest


def test_layer_writer_refuses_a_wrong_diff_id(tmp_path: Path) -> None:
    with open_destination(f"oci:{tmp_path / 'l'}:v1") as dest:
        writer = dest.layer_writer()
        writer.write(layer_tar([Entry("a", data=b"x")]))
        with pytest.raises(IntegrityError, match="expected sha256:0000"):
            writer.finish("sha256:" + "0" * 64)
    assert not (tmp_path / "l").exists()


def test_commit_refuses_a_config_that_does_not_match_the_layers(
    image_files: ImageFiles, tmp_path: Path
) -> None:
    with open_destination(f"oci:{tmp_path / 'l'}:v1") as dest:
        writer = dest.layer_writer()
        writer.write(image_files.image.layers[0].tar)
        layer = writer.finish(image_files.image.diff_ids[0])
        with pytest.raises(IntegrityError, match="do not match"):
            dest.commit(image_files.image.config, [layer])
    assert not (tmp_path / "l").exists()


@pytest.mark.parametrize("dst", ["oci", "oci_archive", "docker_archive"])
def test_leaving_without_commit_leaves_nothing(
    image_files: ImageFiles, tmp_path: Path, dst: str
) -> None:
    ref = _dest(tmp_path, dst)
    with pytest.raises(RuntimeError), open_destination(ref) as dest:
        with open_source(image_files.oci) as source:
            layer = source.layers()[2]
            with source.open_blob(layer) as blob:
                dest.put_blob(layer, blob)
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_aborted_write_into_an_existing_layout_changes_nothing(
    image_files: ImageFiles, tmp_path: Path
) -> None:
    root = tmp_path / "l"
    copy_image(image_files.oci, f"oci:{root}:old")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    other = build_image(variant=1)
    with open_destination(f"oci:{root}:new") as dest:
        for layer in other.layers:
            writer = dest.layer_writer()
            writer.write(layer.tar)
            writer.finish(layer.diff_id)
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before


# -- bad input ----------------------------------------------------------------------


def _truncate(path: Path, dst: Path) -> Path:
    data = path.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def test_truncated_docker_archive(image_files: ImageFiles, tmp_path: Path) -> None:
    src = Path(image_files.docker_archive.split(":", 1)[1])
    bad = _truncate(src, tmp_path / "bad.tar")
    with pytest.raises(TruncatedError, match=r"bad\.tar"):
        copy_image(f"docker-archive:{bad}", f"oci:{tmp_path / 'out'}")
    assert not (tmp_path / "out").exists()


def test_truncated_oci_archive(image_files: ImageFiles, tmp_path: Path) -> None:
    src = Path(image_files.oci_archive.split(":")[1])
    bad = _truncate(src, tmp_path / "bad.tar")
    with pytest.raises((TruncatedError, ImageNotFoundError)):
        copy_image(f"oci-archive:{bad}:v1", f"docker-archive:{tmp_path / 'out.tar'}")
    assert not (tmp_path / "out.tar").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.tar"]


def _layout_copy(image_files: ImageFiles, tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(image_files.oci.split(":")[1], root)
    return root


@pytest.mark.parametrize("layer_index", [0, 1, 2])
def test_blob_with_wrong_digest(image_files: ImageFiles, tmp_path: Path, layer_index: int) -> None:
    root = _layout_copy(image_files, tmp_path)
    layer = image_files.image.layers[layer_index]
    blob = root / "blobs" / "sha256" / layer.digest.split(":")[1]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises((IntegrityError, FormatError), match=layer.digest):
        copy_image(f"oci:{root}:v1", f"oci-archive:{tmp_path / 'out.tar'}")
    assert not (tmp_path / "out.tar").exists()


def test_missing_blob(image_files: ImageFiles, tmp_path: Path) -> None:
    root = _layout_copy(image_files, tmp_path)
    digest = image_files.image.layers[1].digest
    (root / "blobs" / "sha256" / digest.split(":")[1]).unlink()
    with pytest.raises(ImageNotFoundError, match=digest):
        copy_image(f"oci:{root}:v1", f"oci:{tmp_path / 'out'}:v1")
    assert not (tmp_path / "out").exists()


def test_layer_that_does_not_match_its_diff_id(tmp_path: Path) -> None:
    good = build_image(compression="gzip")
    lying = json.loads(good.config)
    lying["rootfs"]["diff_ids"][1] = "sha256:" + "1" * 64
    config = json.dumps(lying).encode()
    manifest = json.loads(good.manifest)
    manifest["config"]["digest"] = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest["config"]["size"] = len(config)
    image = TestImage(config, good.layers, json.dumps(manifest).encode(), good.manifest_type)
    write_oci_layout(tmp_path / "src", image)
    with pytest.raises(IntegrityError, match="layer sha256:1111") as info:
        copy_image(f"oci:{tmp_path / 'src'}:v1", f"docker-archive:{tmp_path / 'o.tar'}")
    assert good.layers[1].digest in str(info.value)
    assert not (tmp_path / "o.tar").exists()


def test_index_without_the_platform(tmp_path: Path) -> None:
    images = [build_image(arch="amd64"), build_image(variant=1, arch="arm64")]
    write_multiplatform_layout(tmp_path / "multi", images)
    arm = TransportOptions(platform=Platform("linux", "arm64"))
    assert inspect_image(f"oci:{tmp_path / 'multi'}:v1", arm)["image_id"] == images[1].image_id
    s390 = TransportOptions(platform=Platform("linux", "s390x"))
    with pytest.raises(ImageNotFoundError, match="linux/s390x"):
        copy_image(f"oci:{tmp_path / 'multi'}:v1", f"oci:{tmp_path / 'out'}", s390)
    assert not (tmp_path / "out").exists()


def test_unknown_tag_and_name(image_files: ImageFiles) -> None:
    layout = image_files.oci.rsplit(":", 1)[0]
    with pytest.raises(ImageNotFoundError, match=r"'nope'.*tags: v1"):
        inspect_image(f"{layout}:nope")
    archive = image_files.docker_archive
    with pytest.raises(ImageNotFoundError, match=r"other:v9.*app:v1"):
        inspect_image(f"{archive}:other:v9")


def test_missing_files_are_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        inspect_image(f"docker-archive:{tmp_path / 'none.tar'}")
    with pytest.raises(ImageNotFoundError):
        inspect_image(f"oci:{tmp_path / 'none'}")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(FormatError):
        inspect_image(f"docker-archive:{tmp_path / 'junk.tar'}")


def test_memory_does_not_grow_with_layer_size(tmp_path: Path) -> None:
    chunk = os.urandom(1 << 20)
    big = [Entry(f"data/{i}.bin", data=chunk[i:] + chunk[:i]) for i in range(24)]
    image = build_image(compression="none", layers=[[Entry("data", "dir"), *big]])
    write_oci_layout(tmp_path / "src", image)
    del big, chunk
    tracemalloc.start()
    try:
        copy_image(f"oci:{tmp_path / 'src'}:v1", f"docker-archive:{tmp_path / 'o.tar'}")
        copy_image(f"docker-archive:{tmp_path / 'o.tar'}", f"oci:{tmp_path / 'o'}:v1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * (1 << 20), f"peak {peak} bytes for a 24 MiB layer"
    assert inspect_image(f"oci:{tmp_path / 'o'}:v1")["image_id"] == image.image_id


def test_docker_archive_with_several_images(tmp_path: Path) -> None:
    one, two = build_image(), build_image(variant=1)
    path = tmp_path / "two.tar"
    write_docker_archive(path, one, "app:v1")
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    write_docker_archive(tmp_path / "b.tar", two, "app:v2")
    with tarfile.open(tmp_path / "b.tar") as tar:
        for m in tar:
            if m.isfile():
                data = tar.extractfile(m).read()  # type: ignore[union-attr]
                if m.name == "manifest.json":
                    both = json.loads(members["manifest.json"]) + json.loads(data)
                    data = json.dumps(both).encode()
                members[m.name] = data
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert inspect_image(f"docker-archive:{path}:app:v2", verify=False)["image_id"] == two.image_id
    assert inspect_image(f"docker-archive:{path}:app:v1", verify=False)["image_id"] == one.image_id
    with pytest.raises(ImageNotFoundError, match="holds 2 images"):
        inspect_image(f"docker-archive:{path}")


def test_put_blob_into_docker_archive_decompresses(image_files: ImageFiles, tmp_path: Path) -> None:
    ref = f"docker-archive:{tmp_path / 'd.tar'}:app:v1"
    with open_source(image_files.oci) as source, open_destination(ref) as dest:
        written = []
        for layer in source.layers():
            with source.open_blob(layer) as blob:
                written.append(dest.put_blob(layer, blob))
        assert [w.diff_id for w in written] == image_files.image.diff_ids
        assert [w.digest for w in written] == image_files.image.diff_ids  # stored plain
        dest.commit(source.config_bytes(), written)
    _assert_same_image(ref, image_files.image)


def test_put_blob_refuses_a_wrong_blob(image_files: ImageFiles, tmp_path: Path) -> None:
    image = image_files.image
    with open_source(image_files.oci) as source:
        gzip_layer = source.layers()[0]
    for ref in (f"oci:{tmp_path / 'l'}:v1", f"docker-archive:{tmp_path / 'd.tar'}"):
        with open_destination(ref) as dest, \
                pytest.raises((IntegrityError, FormatError), match=gzip_layer.digest):
            dest.put_blob(gzip_layer, io.BytesIO(image.layers[1].blob[: gzip_layer.size]))
    assert list(tmp_path.iterdir()) == []
