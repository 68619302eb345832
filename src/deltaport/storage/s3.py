"""A bundle store in S3-compatible object storage (AWS S3, SeaweedFS, Ceph RGW...).

``--store s3://bucket/prefix``: each key is the object ``prefix/key``. Objects are written
whole (a single PUT, or a multipart upload past MULTIPART_THRESHOLD, which S3 makes visible
only when complete), so readers never see a partial object. Every object carries the
SHA-256 of its content in its metadata; after a write the stored size and hash are checked,
and a put of the same content under an existing key is skipped (bundles are immutable).

Reads stream (a file-like over the HTTP body, never buffered whole) and take a byte range,
so the hub can answer a device's ``Range`` request straight from the store, or hand the
device a short-lived presigned URL instead.

Endpoint, region and credentials come from S3Config, else the standard AWS environment
(AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ~/.aws).
Needs boto3 (the ``hub`` extra); the agent never imports this module.
"""

from __future__ import annotations

import errno
import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from deltaport.errors import IntegrityError, StorageError, TransferError, UsageError
from deltaport.storage.base import check_key

SCHEME = "s3"
MULTIPART_THRESHOLD = 64 << 20  # bytes: larger uploads go in parts
MULTIPART_CHUNK = 16 << 20  # bytes per part
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
MAX_ATTEMPTS = 3  # botocore's own retries on throttling and 5xx, per call
PRESIGN_MAX_S = 7 * 24 * 3600  # the S3 limit for a presigned URL's life
HASH_META = "sha256"  # user metadata key (x-amz-meta-sha256)
_READ_CHUNK = 1 << 20
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


@dataclass(frozen=True)
class S3Config:
    """Where the store is; None fields fall back to the standard AWS environment."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> S3Config:
        """Parse ``s3://bucket/prefix``; KWARGS set endpoint, region and credentials."""
        parts = urlsplit(uri)
        if parts.scheme != SCHEME or not parts.netloc or parts.query or parts.fragment:
            raise UsageError(f"not an s3://bucket/prefix store: {uri!r}")
        prefix = parts.path.strip("/")
        if prefix:
            check_key(prefix)
        return cls(bucket=parts.netloc, prefix=prefix, **kwargs)


@dataclass(frozen=True)
class RangeRead:
    """An open byte range of an object: the stream, where it starts, and the object size."""

    stream: BinaryIO
    start: int
    length: int
    total: int


class S3Store:
    """A BundleStore over an S3-compatible bucket."""

    def __init__(self, config: S3Config, client: Any | None = None) -> None:
        self.config = config
        self._client = client if client is not None else make_client(config)

    def _object(self, key: str) -> str:
        check_key(key)
        return f"{self.config.prefix}/{key}" if self.config.prefix else key

    def put_file(self, key: str, path: Path) -> str:
        """Upload PATH under KEY (multipart when large), then check size and hash."""
        digest, size = _file_sha256(path)
        if self._same(key, digest, size):
            return self.location(key)
        from boto3.s3.transfer import TransferConfig

        transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD,
                                  multipart_chunksize=MULTIPART_CHUNK, use_threads=False)
        with _s3_errors(key):
            self._client.upload_file(str(path), self.config.bucket, self._object(key),
                                     ExtraArgs={"Metadata": {HASH_META: digest}},
                                     Config=transfer)
        self._verify(key, digest, size)
        return self.location(key)

    def put_bytes(self, key: str, data: bytes) -> str:
        """PUT DATA under KEY (Content-MD5 checked by the server), then check size and hash."""
        import base64

        digest = hashlib.sha256(data).hexdigest()
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        with _s3_errors(key):
            self._client.put_object(Bucket=self.config.bucket, Key=self._object(key),
                                    Body=data, ContentMD5=md5, Metadata={HASH_META: digest})
        self._verify(key, digest, len(data))
        return self.location(key)

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            with _s3_errors(key):
                head: dict[str, Any] = self._client.head_object(
                    Bucket=self.config.bucket, Key=self._object(key))
                return head
        except StorageError:
            return None

    def _same(self, key: str, digest: str, size: int) -> bool:
        head = self._head(key)
        return (head is not None and head.get("ContentLength") == size
                and head.get("Metadata", {}).get(HASH_META) == digest)

    def _verify(self, key: str, digest: str, size: int) -> None:
        if not self._same(key, digest, size):
            raise IntegrityError(f"bundle store object {key!r} does not match what was written")

    def exists(self, key: str) -> bool:
        """True if an object is stored under KEY."""
        return self._head(key) is not None

    def size(self, key: str) -> int:
        """The object's size in bytes. Raises StorageError if it is missing."""
        with _s3_errors(key):
            head = self._client.head_object(Bucket=self.config.bucket, Key=self._object(key))
        return int(head["ContentLength"])

    def open(self, key: str) -> BinaryIO:
        """A seekable stream of KEY: each read after a seek is one ranged GET, never buffered.

        The size is known at once (``seek(0, 2)``), so the hub serves a device's Range
        request through the same code as for a folder store.
        """
        return io.BufferedReader(_SeekableObject(self, key, self.size(key)), _READ_CHUNK)

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> RangeRead:
        """Stream bytes START..END (inclusive; END None = to the end) of KEY."""
        if start < 0 or (end is not None and end < start):
            raise UsageError(f"bad byte range {start}-{end} for {key!r}")
        args: dict[str, Any] = {"Bucket": self.config.bucket, "Key": self._object(key)}
        if start or end is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end}"
        with _s3_errors(key):
            got = self._client.get_object(**args)
        length = int(got["ContentLength"])
        total = _total_size(got.get("ContentRange"), length)
        stream = io.BufferedReader(_BodyReader(got["Body"], key), _READ_CHUNK)
        return RangeRead(stream=stream, start=start, length=length, total=total)

    def presign(self, key: str, seconds: int) -> str:
        """A URL that GETs KEY (Range allowed) without credentials for SECONDS."""
        if not 0 < seconds <= PRESIGN_MAX_S:
            raise UsageError(f"presigned URL life must be 1..{PRESIGN_MAX_S} s, not {seconds}")
        url: str = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.config.bucket, "Key": self._object(key)},
            ExpiresIn=seconds)
        return url

    def location(self, key: str) -> str:
        """s3://bucket/prefix/key."""
        return f"{SCHEME}://{self.config.bucket}/{self._object(key)}"

    def delete(self, key: str) -> None:
        """Remove KEY; a missing key is not an error (S3 semantics)."""
        with _s3_errors(key):
            self._client.delete_object(Bucket=self.config.bucket, Key=self._object(key))


def make_client(config: S3Config) -> Any:
    """A boto3 S3 client with named timeouts and retries (path-style for self-hosted S3)."""
    import boto3
    from botocore.config import Config

    conf = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                  retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                  s3={"addressing_style": "path"}, signature_version="s3v4")
    return boto3.session.Session().client(
        "s3", endpoint_url=config.endpoint_url, region_name=config.region or "us-east-1",
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key, config=conf)


class _BodyReader(io.RawIOBase):
    """A raw stream over a botocore StreamingBody, mapping network errors."""

    def __init__(self, body: Any, key: str) -> None:
        self._body = body
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        with _s3_errors(self._key):
            data: bytes = self._body.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class _SeekableObject(io.RawIOBase):
    """A raw, seekable view of one object: a ranged GET opened lazily at the position."""

    def __init__(self, store: S3Store, key: str, size: int) -> None:
        self._store = store
        self._key = key
        self._size = size
        self._pos = 0
        self._body: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        pos = max(0, base + offset)
        if pos != self._pos and self._body is not None:
            self._body.close()
            self._body = None
        self._pos = pos
        return pos

    def readinto(self, buf: Any) -> int:
        if self._pos >= self._size or len(buf) == 0:
            return 0
        if self._body is None:
            self._body = self._store.open_range(self._key, self._pos).stream
        data = self._body.read(len(buf))
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None
        super().close()


def _total_size(content_range: str | None, length: int) -> int:
    """The object size from 'bytes 0-9/1234', else LENGTH (a whole-object read)."""
    if content_range and "/" in content_range:
        tail = content_range.rsplit("/", 1)[1]
        if tail.isdigit():
            return int(tail)
    return length


def _file_sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(_READ_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    return h.hexdigest(), size


@contextmanager
def _s3_errors(key: str) -> Iterator[None]:
    """Map botocore errors: missing object -> StorageError, unreachable -> TransferError."""
    from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        if code in _MISSING_CODES:  # caused by FileNotFoundError, as for the folder store
            missing = FileNotFoundError(errno.ENOENT, f"no object {key!r}: {code}")
            raise StorageError(f"bundle store has no {key!r}") from missing
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if status >= 500 or code in {"SlowDown", "RequestTimeout"}:
            raise TransferError(f"bundle store failed on {key!r}: {code} (transient)") from exc
        raise StorageError(f"bundle store refused {key!r}: {code} {err.get('Message', '')}"
                           ) from exc
    except (ConnectionError, HTTPClientError) as exc:
        raise TransferError(f"bundle store unreachable for {key!r}: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"bundle store error on {key!r}: {exc}") from exc
