"""The S3 bundle store against a real SeaweedFS: put/get/range/missing/unreachable/presign."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import pytest

from deltaport.errors import StorageError, TransferError, UsageError
from deltaport.storage.s3 import HASH_META, S3Config, S3Store
from tests.storage.conftest import ACCESS_KEY, SECRET_KEY, Seaweed


def _store(seaweed: Seaweed, prefix: str = "hub1") -> S3Store:
    conf = S3Config.from_uri(f"s3://bundles/{prefix}", endpoint_url=seaweed.endpoint,
                             access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)
    return S3Store(conf)


def test_put_bytes_get_and_location(seaweed: Seaweed) -> None:
    store = _store(seaweed)
    assert store.put_bytes("devices/d1/desired.json", b'{"a": 1}') == \
        "s3://bundles/hub1/devices/d1/desired.json"
    assert store.exists("devices/d1/desired.json")
    with store.open("devices/d1/desired.json") as f:
        assert f.read() == b'{"a": 1}'
    store.put_bytes("devices/d1/desired.json", b'{"a": 2}')  # documents are replaced
    with store.open("devices/d1/desired.json") as f:
        assert f.read() == b'{"a": 2}'


def test_put_file_stores_hash_and_streams_range(seaweed: Seaweed, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    src = tmp_path / "b.dpb"
    src.write_bytes(data)
    store = _store(seaweed)
    store.put_file("bundles/k1.dpb", src)
    head = store._client.head_object(Bucket="bundles", Key="hub1/bundles/k1.dpb")
    assert head["Metadata"][HASH_META] == hashlib.sha256(data).hexdigest()
    assert store.size("bundles/k1.dpb") == len(data)
    part = store.open_range("bundles/k1.dpb", 1000, 1999)
    assert (part.start, part.length, part.total) == (1000, 1000, len(data))
    assert part.stream.read() == data[1000:2000]
    tail = store.open_range("bundles/k1.dpb", len(data) - 10)
    assert tail.stream.read() == data[-10:] and tail.total == len(data)
    with store.open("bundles/k1.dpb") as f:  # streamed in pieces
        assert f.read(4096) == data[:4096]
        assert f.read() == data[4096:]
    store.put_file("bundles/k1.dpb", src)  # same content again: skipped, still there
    assert store.size("bundles/k1.dpb") == len(data)


def test_missing_object_and_delete(seaweed: Seaweed) -> None:
    store = _store(seaweed)
    assert not store.exists("bundles/none.dpb")
    with pytest.raises(StorageError, match=r"no 'bundles/none\.dpb'"):
        store.open("bundles/none.dpb")
    with pytest.raises(StorageError):
        store.size("bundles/none.dpb")
    store.put_bytes("x/y", b"1")
    store.delete("x/y")
    store.delete("x/y")  # missing: not an error
    assert not store.exists("x/y")


def test_prefixes_are_separate(seaweed: Seaweed) -> None:
    a, b = _store(seaweed, "a"), _store(seaweed, "b")
    a.put_bytes("k", b"from a")
    assert not b.exists("k")


def test_presigned_url_serves_ranges_without_credentials(seaweed: Seaweed) -> None:
    store = _store(seaweed)
    store.put_bytes("bundles/p.dpb", b"0123456789")
    url = store.presign("bundles/p.dpb", 60)
    req = urllib.request.Request(url, headers={"Range": "bytes=2-5"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 206 and resp.read() == b"2345"
    with pytest.raises(UsageError):
        store.presign("bundles/p.dpb", 0)


def test_wrong_credentials_refused(seaweed: Seaweed) -> None:
    conf = S3Config.from_uri("s3://bundles/hub1", endpoint_url=seaweed.endpoint,
                             access_key_id=ACCESS_KEY, secret_access_key="wrong")
    with pytest.raises(StorageError, match="refused"):
        S3Store(conf).put_bytes("k", b"1")


def test_unreachable_server_is_transient() -> None:
    conf = S3Config.from_uri("s3://bundles", endpoint_url="http://127.0.0.1:9",
                             access_key_id="k", secret_access_key="s")
    with pytest.raises(TransferError, match="unreachable") as err:
        S3Store(conf).open("bundles/x.dpb")
    assert err.value.transient


@pytest.mark.parametrize("uri", ["s3://", "file:///tmp", "s3://b/../x", "s3://b/p?x=1"])
def test_bad_store_uri(uri: str) -> None:
    with pytest.raises(UsageError):
        S3Config.from_uri(uri)


def test_bad_key_and_range(seaweed: Seaweed) -> None:
    store = _store(seaweed)
    with pytest.raises(UsageError):
        store.open("../etc/passwd")
    with pytest.raises(UsageError):
        store.open_range("k", 5, 2)


def test_multipart_upload(seaweed: Seaweed, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    import deltaport.storage.s3 as s3mod

    monkeypatch.setattr(s3mod, "MULTIPART_THRESHOLD", 5 << 20)
    monkeypatch.setattr(s3mod, "MULTIPART_CHUNK", 5 << 20)
    data = os.urandom(11 << 20)
    src = tmp_path / "big.dpb"
    src.write_bytes(data)
    store = _store(seaweed)
    store.put_file("bundles/big.dpb", src)
    head = store._client.head_object(Bucket="bundles", Key="hub1/bundles/big.dpb")
    assert "-" in head["ETag"]  # a multipart ETag: md5-of-parts "-N"
    part = store.open_range("bundles/big.dpb", (5 << 20) - 3, (5 << 20) + 2)
    assert part.stream.read() == data[(5 << 20) - 3:(5 << 20) + 3]


def test_open_is_seekable_like_a_file(seaweed: Seaweed) -> None:
    data = bytes(range(256)) * 100
    store = _store(seaweed)
    store.put_bytes("bundles/s.dpb", data)
    with store.open("bundles/s.dpb") as f:
        assert f.seek(0, 2) == len(data)
        f.seek(1000)
        assert f.read(10) == data[1000:1010]
        f.seek(5)
        assert f.read() == data[5:]


def test_missing_is_caused_by_file_not_found(seaweed: Seaweed) -> None:
    with pytest.raises(StorageError) as err:
        _store(seaweed).open("bundles/gone.dpb")
    assert isinstance(err.value.__cause__, FileNotFoundError)  # the hub answers 410
