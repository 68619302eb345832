"""The registry client against the real Docker Distribution registry: auth (Basic and
Bearer), resumable uploads and downloads, cross-repository mount, manifest pushed last,
and failures (down, 500, refused) that name what failed and leave no tag behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deltaport.errors import AuthError, IntegrityError, RegistryError, TransferError
from deltaport.oci import TransportOptions, copy_image, inspect_image, open_destination, open_source
from deltaport.oci.registry import RegistryDestination, candidate_base_urls, is_local_host
from deltaport.oci.registry.upload import parse_range_end
from tests.fixtures.images import Entry, TestImage, build_image, write_oci_layout
from tests.fixtures.services import Registry, free_port
from tests.oci import skopeo
from tests.oci.conftest import PASSWORD, USER, ImageFiles, TokenRegistry
from tests.oci.servers import CuttingProxy, HttpServer, ProxyRules

FAST = TransportOptions(retries=2, retry_backoff=0.01, chunk_size=32 * 1024)


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestImage, str]:
    """An image whose first layer is ~300 KB of incompressible data (many chunks)."""
    data = os.urandom(300_000)
    image = build_image(compression=["none", "gzip"], layers=[
        [Entry("data", "dir"), Entry("data/random.bin", data=data)],
        [Entry("etc", "dir"), Entry("etc/motd", data=b"hi\n")],
    ])
    root = tmp_path_factory.mktemp("big") / "layout"
    write_oci_layout(root, image)
    return image, f"oci:{root}:v1"


@pytest.fixture
def proxy(registry: Registry) -> Iterator[CuttingProxy]:
    host, port = registry.host.split(":")
    server = CuttingProxy((host, int(port)))
    yield server
    server.close()


def _tags(registry: Registry, repo: str) -> list[str]:
    response = httpx.get(f"{registry.url}/v2/{repo}/tags/list")
    return list(response.json().get("tags") or []) if response.status_code == 200 else []


def _push_via(ref: str, source_ref: str, options: TransportOptions) -> RegistryDestination:
    with open_source(source_ref, options) as source, open_destination(ref, options) as dest:
        assert isinstance(dest, RegistryDestination)
        layers = []
        for layer in source.layers():
            with source.open_layer(layer) as tar:
                writer = dest.layer_writer()
                while chunk := tar.read(1 << 16):
                    writer.write(chunk)
                layers.append(writer.finish(layer.diff_id))
        dest.commit(source.config_bytes(), layers)
        return dest


# -- uploads ------------------------------------------------------------------------


def test_upload_broken_between_chunks_resumes_from_reported_offset(
    big_image: tuple[TestImage, str], proxy: CuttingProxy, registry: Registry
) -> None:
    image, source = big_image
    proxy.rules.cut_on_request, proxy.rules.cut_on_nth = b"PATCH", 4
    dest = _push_via(f"docker://{proxy.host}/app:v1", source, FAST)
    big_upload = max(dest.uploads, key=lambda u: u.size)
    assert proxy.rules.cuts >= 1
    assert big_upload.stats.sessions == 1  # resumed, not restarted
    assert big_upload.stats.resumes == 1
    assert big_upload.stats.resumed_at == [3 * FAST.chunk_size]
    assert big_upload.stats.bytes_sent == big_upload.size  # nothing sent twice
    info = inspect_image(registry.ref("app:v1"))
    assert info["image_id"] == image.image_id
    assert skopeo.diff_ids(registry.ref("app:v1")) == image.diff_ids


def test_upload_broken_mid_chunk_starts_a_new_session_when_registry_drops_it(
    big_image: tuple[TestImage, str], proxy: CuttingProxy, registry: Registry
) -> None:
    # Distribution 2.8 invalidates a session whose PATCH body was cut off mid-way
    # ("upload resumed at wrong offset"): the client must notice and start over.
    image, source = big_image
    proxy.rules.cut_upstream_method, proxy.rules.cut_upstream_after = b"PATCH", 10_000
    dest = _push_via(f"docker://{proxy.host}/app:v1", source, FAST)
    first = dest.uploads[0]
    assert proxy.rules.cuts >= 1
    assert first.stats.sessions == 2
    assert inspect_image(registry.ref("app:v1"))["image_id"] == image.image_id


def test_download_broken_halfway_resumes_with_range(
    big_image: tuple[TestImage, str], proxy: CuttingProxy, registry: Registry
) -> None:
    image, source = big_image
    copy_image(source, registry.ref("app:v1"))
    with open_source(f"docker://{proxy.host}/app:v1", FAST) as src:
        layer = src.layers()[0]
        proxy.rules.cut_downstream_after = 100_000
        with src.open_layer(layer) as tar:
            data = tar.read()
    assert data == image.layers[0].tar
    assert proxy.rules.cuts == 1
    blob_gets = [r for r in proxy.rules.requests
                 if r.startswith(b"GET") and layer.digest.encode() in r]
    assert len(blob_gets) == 2  # the first, then one with Range from where it broke


def test_cross_repository_mount(image_files: ImageFiles, registry: Registry) -> None:
    copy_image(image_files.oci, registry.ref("first:v1"))
    result = copy_image(registry.ref("first:v1"), registry.ref("second:v1"))
    assert (result.copied, result.skipped) == (0, 3)
    for layer in result.layers:
        head = httpx.head(f"{registry.url}/v2/second/blobs/{layer.digest}")
        assert head.status_code == 200
    assert inspect_image(registry.ref("second:v1"))["image_id"] == image_files.image.image_id


def test_failed_push_leaves_no_tag(image_files: ImageFiles, registry: Registry,
                                   tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "layout"
    shutil.copytree(image_files.oci.split(":")[1], root)
    bad = image_files.image.layers[2]
    (root / "blobs" / "sha256" / bad.digest.split(":")[1]).write_bytes(b"\0" * len(bad.blob))
    with pytest.raises(IntegrityError, match=bad.digest):
        copy_image(f"oci:{root}:v1", registry.ref("half:v1"))
    assert _tags(registry, "half") == []
    # the good layers were uploaded, but nothing refers to them
    uploaded = httpx.head(f"{registry.url}/v2/half/blobs/{image_files.image.layers[0].digest}")
    assert uploaded.status_code == 200
    assert httpx.get(f"{registry.url}/v2/half/manifests/v1").status_code == 404


# -- auth ---------------------------------------------------------------------------


def test_basic_auth(image_files: ImageFiles, basic_registry: Registry) -> None:
    creds = TransportOptions(username=USER, password=PASSWORD)
    ref = basic_registry.ref("private:v1")
    copy_image(image_files.oci, ref, creds)
    assert inspect_image(ref, creds)["image_id"] == image_files.image.image_id
    raw = skopeo.skopeo("inspect", skopeo.TLS, "--creds", f"{USER}:{PASSWORD}", "--config",
                        "--raw", ref)
    assert raw == image_files.image.config
    with pytest.raises(AuthError, match="requires a username and password"):
        inspect_image(ref, verify=False)
    wrong = TransportOptions(username=USER, password="nope")
    with pytest.raises(AuthError, match=f"refused the credentials for '{USER}'"):
        inspect_image(ref, wrong, verify=False)


def test_bearer_token_auth(image_files: ImageFiles, token_registry: TokenRegistry,
                           tmp_path: Path) -> None:
    creds = TransportOptions(username=USER, password=PASSWORD)
    registry = token_registry.registry
    copy_image(image_files.oci, registry.ref("tok/app:v1"), creds)
    result = copy_image(registry.ref("tok/app:v1"), registry.ref("tok/mounted:v1"), creds)
    assert result.skipped == 3  # mounted, with a token covering both repositories
    assert any("repository:tok/app:pull" in entry and "tok/mounted" in entry
               for entry in token_registry.token_log)
    assert inspect_image(registry.ref("tok/mounted:v1"), creds)["image_id"] == (
        image_files.image.image_id)
    copy_image(registry.ref("tok/app:v1"), f"oci:{tmp_path / 'out'}:v1", creds)
    with pytest.raises(AuthError, match="refused 'alice'"):
        inspect_image(registry.ref("tok/app:v1"),
                      TransportOptions(username=USER, password="bad"), verify=False)
    with pytest.raises(AuthError, match="refused anonymous access"):
        copy_image(image_files.oci, registry.ref("tok/anon:v1"))


# -- failures -----------------------------------------------------------------------


def test_registry_down(image_files: ImageFiles, tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(TransferError, match=f"cannot reach registry {host}"):
        inspect_image(f"docker://{host}/app:v1", FAST)
    with pytest.raises(TransferError, match=f"cannot reach registry {host}"):
        copy_image(image_files.oci, f"docker://{host}/app:v1", FAST)
    with pytest.raises(TransferError):
        copy_image(f"docker://{host}/app:v1", f"oci:{tmp_path / 'out'}:v1", FAST)
    assert not (tmp_path / "out").exists()


def test_registry_answering_500(failing_server: HttpServer, image_files: ImageFiles,
                                tmp_path: Path) -> None:
    ref = f"docker://{failing_server.host}/app:v1"
    with pytest.raises(RegistryError, match=r"answered 500 UNKNOWN: internal failure") as info:
        copy_image(ref, f"docker-archive:{tmp_path / 'out.tar'}", FAST)
    assert info.value.status == 500
    assert "manifest app:v1" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RegistryError, match="answered 500"):
        copy_image(image_files.oci, ref, FAST)


def test_unknown_image_is_not_found(registry: Registry) -> None:
    from deltaport.errors import NotFoundError

    with pytest.raises(NotFoundError, match=r"manifest nothing:v1.*MANIFEST_UNKNOWN|NAME_UNKNOWN"):
        inspect_image(registry.ref("nothing:v1"))


# -- pure helpers --------------------------------------------------------------------


def test_scheme_policy() -> None:
    assert candidate_base_urls("127.0.0.1:5000", False) == ["http://127.0.0.1:5000"]
    assert candidate_base_urls("localhost:5000", False) == ["http://localhost:5000"]
    assert candidate_base_urls("[::1]:5000", False) == ["http://[::1]:5000"]
    assert candidate_base_urls("registry.example.com", False) == ["https://registry.example.com"]
    assert candidate_base_urls("10.0.0.5:5000", True) == [
        "https://10.0.0.5:5000", "http://10.0.0.5:5000"]
    assert not is_local_host("example.com:443")


def test_parse_range_end() -> None:
    assert parse_range_end("0-1023") == 1024
    assert parse_range_end("bytes=0-9") == 10
    assert parse_range_end("0-0") == 0
    assert parse_range_end(None) is None
    assert parse_range_end("garbage") is None


def test_proxy_rules_default_is_transparent(proxy: CuttingProxy, image_files: ImageFiles) -> None:
    copy_image(image_files.oci, f"docker://{proxy.host}/plain:v1")
    assert proxy.rules.cuts == 0
    assert isinstance(proxy.rules, ProxyRules)
