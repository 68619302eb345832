"""The independent byte-exact check on small real docker-archive and OCI layout files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from bench.verify import compare, verify_image

from tests.bench.conftest import config_for, layer_tar, sha, write_docker_archive

LAYERS = [layer_tar({"a": b"x" * 5000}), layer_tar({"b/c": b"y" * 100})]
CONFIG = config_for(LAYERS)
WANT = [sha(layer) for layer in LAYERS]


def test_docker_archive_exact(tmp_path: Path) -> None:
    path = tmp_path / "img.tar"
    write_docker_archive(path, CONFIG, LAYERS)
    verdict = verify_image(f"docker-archive:{path}", sha(CONFIG), WANT)
    assert verdict.exact and verdict.summary() == "byte-exact"


def test_docker_archive_gzip_layer_is_hashed_uncompressed(tmp_path: Path) -> None:
    path = tmp_path / "img.tar"
    write_docker_archive(path, CONFIG, [gzip.compress(LAYERS[0]), LAYERS[1]])
    assert verify_image(f"docker-archive:{path}:t:1", sha(CONFIG), WANT).exact


def test_one_changed_layer_is_named(tmp_path: Path) -> None:
    path = tmp_path / "img.tar"
    write_docker_archive(path, CONFIG, [LAYERS[0], layer_tar({"b/c": b"z" * 100})])
    verdict = verify_image(f"docker-archive:{path}", sha(CONFIG), WANT)
    assert not verdict.exact
    assert len(verdict.problems) == 1 and verdict.problems[0].startswith("layer 1 diff_id")


def test_other_config_and_missing_layer_reported() -> None:
    verdict = compare("sha256:" + "0" * 64, WANT[:1], sha(CONFIG), WANT)
    assert not verdict.exact
    assert any("image ID" in p for p in verdict.problems)
    assert any("1 layers, target has 2" in p for p in verdict.problems)


def test_unreadable_output_is_a_verdict_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    verdict = verify_image(f"docker-archive:{tmp_path / 'junk.tar'}", sha(CONFIG), WANT)
    assert not verdict.exact and "unreadable" in verdict.problems[0]
    assert not verify_image(f"oci:{tmp_path / 'none'}:t", sha(CONFIG), WANT).exact


def _blob(layout: Path, data: bytes) -> str:
    digest = sha(data)
    path = layout / "blobs" / "sha256" / digest[7:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def test_oci_layout_with_gzip_layers(tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    blobs = [gzip.compress(layer) for layer in LAYERS]
    manifest = {
        "schemaVersion": 2,
        "config": {"digest": _blob(layout, CONFIG), "size": len(CONFIG)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _blob(layout, b), "size": len(b)} for b in blobs],
    }
    man = json.dumps(manifest).encode()
    index = {"schemaVersion": 2, "manifests": [{
        "digest": _blob(layout, man), "size": len(man),
        "annotations": {"org.opencontainers.image.ref.name": "rebuilt"}}]}
    (layout / "index.json").write_text(json.dumps(index))
    assert verify_image(f"oci:{layout}:rebuilt", sha(CONFIG), WANT).exact
    wrong_tag = verify_image(f"oci:{layout}:other", sha(CONFIG), WANT)
    assert not wrong_tag.exact and "no image tagged" in wrong_tag.problems[0]
