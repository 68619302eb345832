"""A real hub serving bundles from a real SeaweedFS to the agent's downloader: Range, a link
cut every 64 KiB (each retry resumes with Range), a lost object (410), presigned URL."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import httpx
import pytest

from deltaport.storage.s3 import S3Store
from deltaport.transfer import DownloadConfig, download, make_plan
from deltaport.transfer.config import KiB, MiB
from tests.fixtures.proxy import TcpProxy
from tests.hub.conftest import World, build_world, fake_toolkit, hub_in_thread
from tests.storage.conftest import ACCESS_KEY, SECRET_KEY, Seaweed


@pytest.fixture
def s3_world(tmp_path: Path, seaweed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> World:
    """The hub test fleet with its bundles moved from the outbox folder into S3."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    w = build_world(tmp_path / "data", f"sqlite:///{tmp_path / 'hub.db'}", bundle_size=1 * MiB)
    return w


def _settings(w: World, seaweed: Seaweed, prefix: str):  # type: ignore[no-untyped-def]
    base = w.settings()
    fleet = dataclasses.replace(base.fleet, store=f"s3://bundles/{prefix}",
                                s3_endpoint=seaweed.endpoint)
    return dataclasses.replace(base, fleet=fleet)


def _move_outbox(w: World, store: S3Store) -> None:
    outbox = w.data_dir / "outbox"
    for path in sorted(p for p in outbox.rglob("*") if p.is_file()):
        store.put_file(path.relative_to(outbox).as_posix(), path)
    for path in (outbox / "bundles").iterdir():
        path.unlink()  # the hub can only have them from S3 now


def test_hub_serves_bundles_from_s3_with_range_and_resume(
    s3_world: World, seaweed: Seaweed, tmp_path: Path
) -> None:
    w = s3_world
    source = w.bundle_path("dev-1").read_bytes()
    plan = make_plan(w.bundle_path("dev-1"), 256 * KiB)
    settings = _settings(w, seaweed, "hub-range")
    from deltaport.storage import open_store

    store = open_store(settings.fleet.store, w.data_dir / "unused",
                       s3_endpoint=seaweed.endpoint)
    assert isinstance(store, S3Store)
    _move_outbox(w, store)
    with hub_in_thread(settings, toolkit=fake_toolkit(w.registry)) as url:
        auth = {"Authorization": f"Bearer {w.tokens['dev-1']}"}
        bundle_url = f"{url}/api/v1/device/bundles/{w.bundles['dev-1']}"
        part = httpx.get(bundle_url, headers={**auth, "Range": "bytes=1000-1999"}, timeout=30)
        assert part.status_code == 206 and part.content == source[1000:2000]
        assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(source)}"
        port = int(url.rsplit(":", 1)[1])
        with TcpProxy(("127.0.0.1", port), cut_after=64 * KiB) as link:
            result = download(
                f"{link.url}/api/v1/device/bundles/{w.bundles['dev-1']}",
                tmp_path / "bundle", plan,
                config=DownloadConfig(headers=auth, backoff_initial=0.05, backoff_max=0.5,
                                      read_timeout=5, connect_timeout=2, max_duration=90),
                expected_sha256=w.bundles["dev-1"],
            )
        assert (tmp_path / "bundle").read_bytes() == source
        assert link.cuts >= 10 and result.retries >= 10
        assert result.bytes_fetched <= 1.05 * len(source)  # resumed, not restarted
        lost_key = next(k for k in _bundle_keys(store) if _digest_of(store, k) ==
                        w.bundles["dev-2"])
        store.delete(lost_key)
        gone = httpx.get(f"{url}/api/v1/device/bundles/{w.bundles['dev-2']}",
                         headers={"Authorization": f"Bearer {w.tokens['dev-2']}"}, timeout=30)
        assert gone.status_code == 410 and gone.json()["code"] == "bundle_missing"


def test_presigned_url_download_verified_like_the_hub(
    s3_world: World, seaweed: Seaweed, tmp_path: Path
) -> None:
    w = s3_world
    settings = _settings(w, seaweed, "hub-presign")
    from deltaport.storage import open_store

    store = open_store(settings.fleet.store, w.data_dir, s3_endpoint=seaweed.endpoint)
    assert isinstance(store, S3Store)
    path = w.bundle_path("dev-1")
    store.put_file("bundles/p.dpb", path)
    with TcpProxy(("127.0.0.1", int(seaweed.endpoint.rsplit(":", 1)[1])),
                  cut_after=128 * KiB) as link:
        # the signature covers the host: sign for the cut link's address
        via = S3Store(dataclasses.replace(store.config, endpoint_url=link.url))
        result = download(via.presign("bundles/p.dpb", 120), tmp_path / "b",
                          make_plan(path, 256 * KiB),
                          config=DownloadConfig(backoff_initial=0.05, backoff_max=0.5,
                                                read_timeout=5, connect_timeout=2,
                                                max_duration=90),
                          expected_sha256=w.bundles["dev-1"])
    assert (tmp_path / "b").read_bytes() == path.read_bytes() and result.retries >= 3


def _bundle_keys(store: S3Store) -> list[str]:
    got = store._client.list_objects_v2(Bucket="bundles", Prefix=f"{store.config.prefix}/")
    return [o["Key"].split("/", 1)[1] for o in got.get("Contents", [])
            if "/bundles/" in o["Key"]]


def _digest_of(store: S3Store, key: str) -> str:
    with store.open(key) as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()
