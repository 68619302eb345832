"""Image deltas end to end with real registries, skopeo and podman.

The images are runnable: a static busybox base layer, a config layer and an app layer;
v2 edits the app and config. Bundles are built from registry sources and applied into
another real registry (the device's), then skopeo and podman must agree.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deltaport.bundle import BundleReader, generate_keypair, load_private_key, load_public_key
from deltaport.delta.image import apply_image_delta, create_image_delta, plan_layers
from deltaport.delta.model import DeltaConfig
from deltaport.errors import (
    IntegrityError,
    MissingSourceError,
    NotFoundError,
    SignatureError,
    TruncatedError,
    UsageError,
)
from deltaport.oci import TransportOptions, copy_image, open_destination, open_source
from tests.fixtures.podman import make_podman
from tests.fixtures.services import Registry, run_registry

BUSYBOX = Path("/bin/busybox")
OPTS = TransportOptions()
DELTAPORT = str(Path(sys.executable).with_name("deltaport"))


def _tar(files: dict[str, bytes], symlinks: dict[str, str] | None = None,
         mtime: int = 1_700_000_000) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({"/".join(p.split("/")[:k]) for p in files for k in
                       range(1, len(p.split("/")))} | {"/".join(p.split("/")[:k]) for p in
                       (symlinks or {}) for k in range(1, len(p.split("/")))})
        for d in dirs:
            info = tarfile.TarInfo(d + "/")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
            tar.addfile(info)
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o755, mtime
            tar.addfile(info, io.BytesIO(data))
        for path, target in sorted((symlinks or {}).items()):
            info = tarfile.TarInfo(path)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, mtime
            tar.addfile(info)
    return buf.getvalue()


def _layers(version: int) -> list[bytes]:
    base = _tar({"bin/busybox": BUSYBOX.read_bytes()}, {"bin/sh": "busybox", "bin/cat": "busybox"})
    lib = {f"usr/lib/app/mod{i:02d}.txt": (f"module {i} " * 400).encode() for i in range(30)}
    if version == 2:
        lib["usr/lib/app/mod07.txt"] += b"patched\n"
    app = {"app/hello.txt": f"hello from v{version}\n".encode(),
           "app/run.sh": b"#!/bin/sh\ncat /app/hello.txt\n"}
    mtime = 1_700_000_000 + version * 86_400
    return [base, _tar(lib, mtime=mtime), _tar(app, mtime=mtime)]


def _config(diff_ids: list[str], version: int) -> bytes:
    return json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh", "/app/run.sh"], "Env": [f"V={version}"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()


def _push(ref: str, version: int) -> str:
    layers = _layers(version)
    diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers]
    config = _config(diff_ids, version)
    with open_destination(ref, OPTS) as dest:
        written = []
        for data, diff_id in zip(layers, diff_ids, strict=True):
            writer = dest.layer_writer()
            writer.write(data)
            written.append(writer.finish(diff_id))
        dest.commit(config, written)
    return "sha256:" + hashlib.sha256(config).hexdigest()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, dict[int, str]]]:
    with run_registry(tmp_path_factory.mktemp("cloud")) as reg:
        ids = {v: _push(reg.ref(f"app:v{v}"), v) for v in (1, 2)}
        yield reg, ids


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    generate_keypair(d / "good")
    generate_keypair(d / "other")
    return d


@pytest.fixture
def device(tmp_path: Path, cloud: tuple[Registry, dict[int, str]]) -> Iterator[Registry]:
    """A device registry that already has app:v1."""
    reg, _ = cloud
    with run_registry(tmp_path / "device") as dev:
        copy_image(reg.ref("app:v1"), dev.ref("app:v1"), OPTS)
        yield dev


def _skopeo_config(ref: str) -> dict[str, object]:
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--config", ref],
                         check=True, capture_output=True).stdout
    return dict(json.loads(out))


def _skopeo_raw(ref: str) -> dict[str, object]:
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", ref],
                         check=True, capture_output=True).stdout
    return dict(json.loads(out))


def _tag_exists(reg: Registry, name: str) -> bool:
    try:
        with open_source(reg.ref(name), OPTS) as src:
            src.manifest_bytes()
        return True
    except NotFoundError:
        return False


def test_plan_layers_marks_layers_the_device_has() -> None:
    plans = plan_layers(["sha256:a", "sha256:b", "sha256:c"], {"sha256:b"})
    assert [p.encoding for p in plans] == ["patch", "source", "patch"]


def test_update_through_registries_is_verified_by_skopeo_and_runs_in_podman(
    tmp_path: Path, cloud: tuple[Registry, dict[int, str]], device: Registry, keys: Path
) -> None:
    reg, ids = cloud
    bundle = tmp_path / "v2.bundle"
    summary = create_image_delta(
        reg.ref("app:v2"), [reg.ref("app:v1")], bundle,
        signing_key=load_private_key(keys / "good" / "deltaport.key"), options=OPTS,
    )
    assert summary.image_id == ids[2]
    encodings = [layer.encoding for layer in summary.layers]
    assert encodings[0] == "source"  # busybox layer is on the device: costs nothing
    assert summary.layers[0].patch_bytes == 0
    # the update is tiny compared with the changed layers
    changed = sum(la.size for la in summary.layers[1:])
    assert summary.bundle_bytes < changed / 4

    result = apply_image_delta(
        bundle, [device.ref("app:v1")], device.ref("app:v2"),
        trusted_keys=[load_public_key(keys / "good" / "deltaport.pub")], options=OPTS,
    )
    assert result.image_id == ids[2]
    assert _skopeo_raw(device.ref("app:v2"))["config"] == {
        **_skopeo_raw(device.ref("app:v2"))["config"], "digest": ids[2]}  # type: ignore[dict-item]
    cloud_cfg = _skopeo_config(reg.ref("app:v2"))
    device_cfg = _skopeo_config(device.ref("app:v2"))
    assert device_cfg["rootfs"] == cloud_cfg["rootfs"]

    podman = make_podman(tmp_path / "podman", [device.host])
    ref = f"{device.host}/app:v2"
    pulled = podman.run("pull", "--tls-verify=false", ref)
    assert pulled.returncode == 0, pulled.stderr
    ran = podman.run("run", "--rm", "--network", "none", ref)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hello from v2\n"
    image_id = podman.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    assert "sha256:" + image_id == ids[2]


def test_first_image_bundle_is_self_contained_into_every_local_transport(
    tmp_path: Path, cloud: tuple[Registry, dict[int, str]]
) -> None:
    reg, ids = cloud
    bundle = tmp_path / "v1.bundle"
    summary = create_image_delta(reg.ref("app:v1"), [], bundle, options=OPTS)
    assert all(la.encoding != "source" for la in summary.layers)
    with open_source(reg.ref("app:v1"), OPTS) as src:
        gzip_bytes = sum(la.size for la in src.layers())
    assert summary.bundle_bytes < gzip_bytes  # compressed harder than the registry's gzip
    for dest in (f"docker-archive:{tmp_path}/out.tar:app:v1", f"oci:{tmp_path}/layout:v1",
                 f"oci-archive:{tmp_path}/out-oci.tar:v1"):
        result = apply_image_delta(bundle, [], dest, options=OPTS)
        assert result.image_id == ids[1]
        raw = _skopeo_raw(dest)
        config = raw["config"]
        assert isinstance(config, dict) and config["digest"] == ids[1]


def test_missing_source_names_the_layers_and_writes_nothing(
    tmp_path: Path, cloud: tuple[Registry, dict[int, str]], device: Registry
) -> None:
    reg, _ = cloud
    bundle = tmp_path / "v2.bundle"
    create_image_delta(reg.ref("app:v2"), [reg.ref("app:v1")], bundle, options=OPTS)
    with open_source(reg.ref("app:v1"), OPTS) as src:
        base_diff_id = src.layers()[0].diff_id
    with pytest.raises(MissingSourceError) as err:
        apply_image_delta(bundle, [], device.ref("app:v2"), options=OPTS)
    assert base_diff_id in err.value.missing
    assert base_diff_id in str(err.value)
    assert not _tag_exists(device, "app:v2")


def test_the_config_is_packed_against_the_source_image_and_needs_it(
    tmp_path: Path, cloud: tuple[Registry, dict[int, str]], device: Registry
) -> None:
    """The target config travels as a delta of the source image's config (content
    version 3); a device with the same layers under another config is told what is
    missing, and nothing is written."""
    reg, ids = cloud
    based, plain = tmp_path / "based.bundle", tmp_path / "plain.bundle"
    create_image_delta(reg.ref("app:v2"), [reg.ref("app:v1")], based, options=OPTS)
    create_image_delta(reg.ref("app:v2"), [reg.ref("app:v1")], plain, options=OPTS,
                       config=DeltaConfig(config_base=False))
    with BundleReader(based) as r:
        content = r.index.content
    with BundleReader(plain) as r:
        plain_content = r.index.content
    assert content["version"] == 3 and plain_content["version"] == 2
    assert content["config"]["codec"] == "zstd-base" and content["config"]["base"] == ids[1]
    assert content["config"]["length"] < plain_content["config"]["length"]
    assert based.stat().st_size < plain.stat().st_size
    other = device.ref("other:v1")  # v1's layers, another config: not the base
    with open_source(device.ref("app:v1"), OPTS) as src, open_destination(other, OPTS) as dest:
        layers = src.layers()
        written = []
        for layer in layers:
            writer = dest.layer_writer()
            with src.open_layer(layer) as stream:
                while chunk := stream.read(1 << 16):
                    writer.write(chunk)
            written.append(writer.finish(layer.diff_id))
        config = json.loads(src.config_bytes())
        config["config"]["Env"] = ["V=other"]
        dest.commit(json.dumps(config).encode(), written)
    with pytest.raises(MissingSourceError) as err:
        apply_image_delta(based, [other], device.ref("app:v2"), options=OPTS)
    assert err.value.missing == [ids[1]] and ids[1] in str(err.value)
    assert not _tag_exists(device, "app:v2")
    result = apply_image_delta(based, [device.ref("app:v1")], device.ref("app:v2"), options=OPTS)
    assert result.image_id == ids[2]
    assert _skopeo_raw(device.ref("app:v2"))["config"]["digest"] == ids[2]  # type: ignore[index]


def test_untrusted_key_and_unsigned_bundle_are_refused(
    tmp_path: Path, cloud: tuple[Registry, dict[int, str]], device: Registry, keys: Path
) -> None:
    reg, _ = cloud
    signed = tmp_path / "signed.bundle"
    unsigned = tmp_path / "unsigned.bundle"
    create_image_delta(reg.ref("app:v2"), [reg.ref("app:v1")], signed, options=OPTS,
                       signing_key=load_private_key(keys / "good" / "deltaport.key"))
    create_image_delta(reg.ref("app:v2"), [reg.ref("app:v1")], unsigned, options=OPTS)
    other = load_public_key(keys / "other" / "deltaport.pub")
    good = load_public_key(keys / "good" / "deltaport.pub")
    with pytest.raises(SignatureError):
        apply_image_delta(signed, [device.ref("app:v1")], device.ref("app:v2"),
                          trusted_keys=[other], options=OPTS)
    with pytest.raises(SignatureError):
        apply_image_delta(unsigned, [device.ref("app:v1")], device.ref("app:v2"),
                          trusted_keys=[good], options=OPTS)
    assert not _tag_exists(device, "app:v2")


def test_source_with_right_name_but_other_content_fails_naming_the_layer(
    tmp_path: Path, cloud: tuple[Registry, dict[int, str]]
) -> None:
    reg, _ = cloud
    bundle = tmp_path / "v2.bundle"
    create_image_delta(reg.ref("app:v2"), [reg.ref("app:v1")], bundle, options=OPTS)
    layout = tmp_path / "v1-layout"
    copy_image(reg.ref("app:v1"), f"oci:{layout}:v1", OPTS)
    with open_source(f"oci:{layout}:v1", OPTS) as src:
        lib = src.layers()[1]
    blob = layout / "blobs" / "sha256" / lib.digest.split(":", 1)[1]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        apply_image_delta(bundle, [f"oci:{layout}:v1"], f"oci:{tmp_path}/out:v2", options=OPTS)
    assert lib.digest in str(err.value) or lib.diff_id in str(err.value)
    assert not (tmp_path / "out").exists()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DELTAPORT, *args], capture_output=True, text=True, timeout=300)


def test_cli_create_apply_and_bad_bundles(
    tmp_path: Path, cloud: tuple[Registry, dict[int, str]], keys: Path
) -> None:
    reg, ids = cloud
    bundle = tmp_path / "v2.bundle"
    created = _cli("delta", "create", "--to", reg.ref("app:v2"), "--from", reg.ref("app:v1"),
                   "--sign-key", str(keys / "good" / "deltaport.key"), "-o", str(bundle),
                   "--json")
    assert created.returncode == 0, created.stderr
    summary = json.loads(created.stdout)
    assert summary["image_id"] == ids[2]
    assert summary["bundle_bytes"] == bundle.stat().st_size

    archive = tmp_path / "v1.tar"
    copy_image(reg.ref("app:v1"), f"docker-archive:{archive}:app:v1", OPTS)
    out = tmp_path / "v2.tar"
    applied = _cli("delta", "apply", str(bundle), "--from", f"docker-archive:{archive}",
                   "--to", f"docker-archive:{out}:app:v2",
                   "--trust-key", str(keys / "good" / "deltaport.pub"), "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["image_id"] == ids[2]

    missing = _cli("delta", "apply", str(bundle), "--to", f"oci:{tmp_path}/m:v2",
                   "--trust-key", str(keys / "good" / "deltaport.pub"))
    assert missing.returncode == MissingSourceError.exit_code
    assert "source layers" in missing.stderr
    assert not (tmp_path / "m").exists()

    truncated = tmp_path / "truncated.bundle"
    truncated.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    cut = _cli("delta", "apply", str(truncated), "--from", f"docker-archive:{archive}",
               "--to", f"oci:{tmp_path}/t:v2", "--no-verify")
    assert cut.returncode == TruncatedError.exit_code, cut.stderr
    assert not (tmp_path / "t").exists()
    assert "NOT checked" in cut.stderr

    unchecked = _cli("delta", "apply", str(bundle), "--from", f"docker-archive:{archive}",
                     "--to", f"oci:{tmp_path}/u:v2")
    assert unchecked.returncode == UsageError.exit_code
    assert "--trust-key" in unchecked.stderr and "--no-verify" in unchecked.stderr
    assert not (tmp_path / "u").exists()

    skipped = _cli("delta", "apply", str(bundle), "--from", f"docker-archive:{archive}",
                   "--to", f"oci:{tmp_path}/s:v2", "--no-verify", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert "signature is NOT checked" in skipped.stderr
    assert json.loads(skipped.stdout)["image_id"] == ids[2]


def test_signature_and_rank_prefer_the_closest_source(
    tmp_path: Path, cloud: tuple[Registry, dict[int, str]]
) -> None:
    reg, _ = cloud
    sig1 = tmp_path / "v1.sig"
    empty_ref = reg.ref("empty:v1")
    with open_destination(empty_ref, OPTS) as dest:
        data = _tar({"etc/motd": b"unrelated\n"})
        diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
        writer = dest.layer_writer()
        writer.write(data)
        dest.commit(_config([diff_id], 0), [writer.finish(diff_id)])
    sig0 = tmp_path / "empty.sig"
    for ref, path in ((reg.ref("app:v1"), sig1), (empty_ref, sig0)):
        made = _cli("signature", "create", ref, "-o", str(path))
        assert made.returncode == 0, made.stderr
    ranked = _cli("delta", "rank", "--to", reg.ref("app:v2"), str(sig0), str(sig1))
    assert ranked.returncode == 0, ranked.stderr
    doc = json.loads(ranked.stdout)
    order = [c["image"] for c in doc["candidates"]]
    assert order == [reg.ref("app:v1"), empty_ref]
    assert doc["candidates"][0]["estimated_bytes"] < doc["candidates"][1]["estimated_bytes"]


@pytest.fixture(autouse=True)
def _tools_present() -> None:
    for tool in ("skopeo", "podman", "docker-registry"):
        assert shutil.which(tool), f"{tool} is not installed (scripts/setup.sh installs it)"
