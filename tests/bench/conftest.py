"""Tiny fake corpora for the benchmark harness tests: real tar/OCI files, a few KB each."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed layer tar holding ``files`` (fixed mtimes: deterministic bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def config_for(layers: list[bytes]) -> bytes:
    cfg = {"architecture": "amd64", "os": "linux",
           "rootfs": {"type": "layers", "diff_ids": [sha(layer) for layer in layers]}}
    return json.dumps(cfg, sort_keys=True).encode()


def write_docker_archive(path: Path, config: bytes, layers: list[bytes]) -> None:
    """A docker-save style archive: manifest.json, config, one tar per layer."""
    members = {f"{sha(config)[7:]}.json": config}
    names = []
    for layer in layers:
        name = f"{sha(layer)[7:]}/layer.tar"
        members[name] = layer
        names.append(name)
    manifest = [{"Config": f"{sha(config)[7:]}.json", "RepoTags": ["t:1"], "Layers": names}]
    members["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@dataclass(frozen=True)
class FakeImage:
    name: str
    archive: Path
    config: bytes
    layers: list[bytes]

    def index_entry(self) -> dict[str, object]:
        data = self.archive.read_bytes()
        return {
            "name": self.name, "docker_archive": str(self.archive),
            "docker_archive_size": len(data),
            "docker_archive_sha256": hashlib.sha256(data).hexdigest(),
            "config_digest": sha(self.config),
            "layers": [{"diff_id": sha(layer), "size": len(layer), "gz_size": len(layer) // 3,
                        "created_by": "test"} for layer in self.layers],
        }


def make_image(root: Path, name: str, layers: list[bytes]) -> FakeImage:
    config = config_for(layers)
    (root / "images").mkdir(parents=True, exist_ok=True)
    archive = root / "images" / f"{name}.docker.tar"
    write_docker_archive(archive, config, layers)
    return FakeImage(name, archive, config, layers)


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """Two images sharing a base layer, S0 and S2 scenarios, as the corpus builder writes."""
    root = tmp_path / "public"
    base = layer_tar({f"usr/lib/f{i}": bytes([i]) * 3000 for i in range(20)})
    app1 = layer_tar({"app/main.js": b"console.log('v1')\n" * 200})
    app2 = layer_tar({"app/main.js": b"console.log('v2')\n" * 200})
    images = [make_image(root, "app-v1", [base, app1]), make_image(root, "app-v2", [base, app2])]
    (root / "images.json").write_text(json.dumps({i.name: i.index_entry() for i in images}))
    scenarios = [
        {"id": "S0", "old": None, "new": "app-v1", "desc": "first image"},
        {"id": "S2", "old": "app-v1", "new": "app-v2", "desc": "app update"},
    ]
    (root / "scenarios.json").write_text(json.dumps(scenarios))
    return root
