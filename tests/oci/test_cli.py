"""`deltaport image inspect/copy`: output, exit codes, and no partial image left behind
on failure. A few cases run the installed `deltaport` program (slow to start: it loads
every command group); the rest invoke the image command group in-process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deltaport.cli import image as image_cli
from deltaport.errors import DeltaportError
from tests.fixtures.images import build_image, write_multiplatform_layout
from tests.fixtures.services import Registry, free_port
from tests.oci.conftest import PASSWORD, USER, ImageFiles
from tests.oci.servers import HttpServer

DELTAPORT = str(Path(sys.executable).parent / "deltaport")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `deltaport image ARGS` program."""
    return subprocess.run([DELTAPORT, "image", *args], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def run_here(*args: str) -> subprocess.CompletedProcess[str]:
    """Invoke the image group in-process; a DeltaportError becomes its exit code and
    message, as the entry point does."""
    result = CliRunner().invoke(image_cli.app, list(args))
    code, stderr = result.exit_code, result.stderr
    if isinstance(result.exception, DeltaportError):
        code, stderr = result.exception.exit_code, f"error: {result.exception}"
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), code, result.stdout, stderr)


def test_copy_and_inspect(image_files: ImageFiles, registry: Registry, tmp_path: Path) -> None:
    image = image_files.image
    done = run("copy", image_files.oci, registry.ref("cli/app:v1"))
    assert done.returncode == 0, done.stderr
    assert "3 layers copied" in done.stderr
    done = run("copy", "--insecure", registry.ref("cli/app:v1"),
               f"docker-archive:{tmp_path / 'app.tar'}:cli/app:v1")
    assert done.returncode == 0, done.stderr
    done = run("inspect", f"docker-archive:{tmp_path / 'app.tar'}:cli/app:v1")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["image_id"] == image.image_id
    assert (info["architecture"], info["os"]) == ("amd64", "linux")
    assert [layer["diff_id"] for layer in info["layers"]] == image.diff_ids
    assert info["total_uncompressed_size"] == sum(len(layer.tar) for layer in image.layers)
    assert set(info["layers"][0]) == {"digest", "diff_id", "size", "uncompressed_size",
                                      "media_type", "compression"}
    quick = json.loads(run_here("inspect", "--quick", registry.ref("cli/app:v1")).stdout)
    assert quick["image_id"] == image.image_id
    assert quick["layers"][0]["uncompressed_size"] is None
    assert quick["manifest_digest"].startswith("sha256:")


def _assert_fails(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    message = " ".join(done.stderr.split())
    for word in words:
        assert word in message, message
    assert "Traceback" not in done.stderr


def test_truncated_archive(image_files: ImageFiles, tmp_path: Path) -> None:
    data = Path(image_files.docker_archive.split(":", 1)[1]).read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) * 2 // 3])
    done = run("copy", f"docker-archive:{tmp_path / 'cut.tar'}", f"oci:{tmp_path / 'out'}:v1")
    _assert_fails(done, 3, "cut.tar", "truncated")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tar"]


def test_blob_with_wrong_digest(image_files: ImageFiles, tmp_path: Path) -> None:
    root = tmp_path / "src"
    shutil.copytree(image_files.oci.split(":")[1], root)
    layer = image_files.image.layers[0]
    blob = root / "blobs" / "sha256" / layer.digest.split(":")[1]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x55
    blob.write_bytes(bytes(data))
    done = run_here("copy", f"oci:{root}:v1", f"oci-archive:{tmp_path / 'out.tar'}:v1")
    _assert_fails(done, 4, layer.digest, "expected")
    assert not (tmp_path / "out.tar").exists()


def test_missing_blob(image_files: ImageFiles, tmp_path: Path) -> None:
    root = tmp_path / "src"
    shutil.copytree(image_files.oci.split(":")[1], root)
    digest = image_files.image.layers[1].digest
    (root / "blobs" / "sha256" / digest.split(":")[1]).unlink()
    done = run_here("copy", f"oci:{root}:v1", f"docker-archive:{tmp_path / 'out.tar'}")
    _assert_fails(done, 7, digest, "missing")
    assert not (tmp_path / "out.tar").exists()


def test_platform_absent(tmp_path: Path) -> None:
    write_multiplatform_layout(tmp_path / "multi", [build_image(), build_image(arch="arm64")])
    done = run_here("copy", "--platform", "linux/s390x", f"oci:{tmp_path / 'multi'}:v1",
               f"oci:{tmp_path / 'out'}:v1")
    _assert_fails(done, 7, "linux/s390x", "linux/amd64, linux/arm64")
    assert not (tmp_path / "out").exists()


def test_registry_down_and_500(tmp_path: Path, failing_server: HttpServer) -> None:
    port = free_port()
    done = run("inspect", f"docker://127.0.0.1:{port}/app:v1")
    _assert_fails(done, 5, f"cannot reach registry 127.0.0.1:{port}")
    done = run_here("copy", f"docker://{failing_server.host}/app:v1", f"oci:{tmp_path / 'out'}:v1")
    _assert_fails(done, 6, failing_server.host, "answered 500")
    assert not (tmp_path / "out").exists()


def test_auth_refused(image_files: ImageFiles, basic_registry: Registry) -> None:
    ref = basic_registry.ref("locked:v1")
    done = run("copy", image_files.oci, ref)
    _assert_fails(done, 6, basic_registry.host, "requires a username and password")
    done = run_here("copy", "--creds", f"{USER}:wrong", image_files.oci, ref)
    _assert_fails(done, 6, "refused the credentials", USER)
    done = run_here("copy", "--creds", f"{USER}:{PASSWORD}", image_files.oci, ref)
    assert done.returncode == 0, done.stderr
    done = run_here("inspect", "--quick", "--creds", f"{USER}:{PASSWORD}", ref)
    assert json.loads(done.stdout)["image_id"] == image_files.image.image_id


@pytest.mark.parametrize("ref", ["nonsense", "docker://127.0.0.1:5000/UPPER:v1", "oci:"])
def test_bad_reference(ref: str) -> None:
    _assert_fails(run_here("inspect", ref), 2)
