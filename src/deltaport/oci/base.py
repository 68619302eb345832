"""ImageSource and ImageDestination: what every transport provides.

A source hands out the manifest, the config and the layers, every byte verified while
it streams. A destination takes layers (as uncompressed tars through a LayerWriter, or
as stored blobs through put_blob), then commit() writes config and manifest LAST; a
destination left without commit() removes everything it wrote.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self, cast

from deltaport.errors import FormatError, IntegrityError, StorageError
from deltaport.oci import mediatypes as mt
from deltaport.oci.compression import CompressingWriter, Compression, decompressing_reader
from deltaport.oci.digest import (
    HashingWriter,
    VerifyingReader,
    new_hasher,
    sha256_digest,
    verify_bytes,
)
from deltaport.oci.model import (
    Descriptor,
    ImageConfig,
    Layer,
    Manifest,
    pair_layers,
    parse_config,
    parse_manifest,
)
from deltaport.oci.options import TransportOptions
from deltaport.oci.reference import ImageReference

COPY_CHUNK = 1 << 20


class ImageSource:
    """An image to read. Subclasses implement ``_raw_manifest`` and ``_open_raw``."""

    def __init__(self, reference: ImageReference, options: TransportOptions) -> None:
        self.reference = reference
        self.options = options
        self._manifest: tuple[bytes, str] | None = None
        self._config_bytes: bytes | None = None

    # -- transport specific -------------------------------------------------------
    def _raw_manifest(self) -> tuple[bytes, str]:
        """The selected image manifest and its media type (an index already resolved)."""
        raise NotImplementedError

    def _open_raw(self, descriptor: Descriptor) -> BinaryIO:
        """The stored bytes of a blob, unverified (this class verifies)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release files and connections."""

    # -- common --------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def manifest_bytes(self) -> tuple[bytes, str]:
        """The raw manifest of the selected platform and its media type."""
        if self._manifest is None:
            self._manifest = self._raw_manifest()
        return self._manifest

    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest_bytes()[0])

    def manifest(self) -> Manifest:
        data, media_type = self.manifest_bytes()
        return parse_manifest(data, media_type, f"manifest of {self.reference}")

    def config_bytes(self) -> bytes:
        """The config blob, verified against the config digest."""
        if self._config_bytes is None:
            desc = self.manifest().config
            what = f"config {desc.digest} of {self.reference}"
            if desc.size > self.options.max_config_bytes:
                raise FormatError(f"{what}: larger than {self.options.max_config_bytes} bytes")
            with self._open_raw(desc) as stream:
                data = stream.read(desc.size + 1)
            if len(data) != desc.size:
                raise IntegrityError(f"{what}: {len(data)} bytes, expected {desc.size}")
            self._config_bytes = verify_bytes(data, desc.digest, what)
        return self._config_bytes

    def config(self) -> ImageConfig:
        return parse_config(self.config_bytes(), f"config of {self.reference}")

    def image_id(self) -> str:
        """The config digest, which names the image."""
        return self.manifest().config.digest

    def layers(self) -> list[Layer]:
        """The layers, base first, each with its blob descriptor and diff_id."""
        return pair_layers(self.manifest(), self.config(), f"image {self.reference}")

    @contextlib.contextmanager
    def open_blob(self, layer: Layer) -> Iterator[BinaryIO]:
        """The stored (maybe compressed) bytes of LAYER, digest and size verified at EOF
        (and at the end of a block that did not read to EOF)."""
        what = f"layer blob {layer.digest} of {self.reference}"
        with self._open_raw(layer.descriptor) as raw:
            checker = VerifyingReader(raw, layer.digest, layer.size, what)
            yield cast(BinaryIO, io.BufferedReader(checker, COPY_CHUNK))
            checker.finish()

    @contextlib.contextmanager
    def open_layer(self, layer: Layer) -> Iterator[BinaryIO]:
        """The UNCOMPRESSED tar of LAYER, verified against its diff_id at EOF (and at the
        end of a block that did not read to EOF); the stored blob is verified too."""
        with self.open_blob(layer) as blob, uncompressed_layer(layer, blob, self.reference) as tar:
            yield tar


@contextlib.contextmanager
def uncompressed_layer(layer: Layer, blob: BinaryIO,
                       origin: ImageReference | str) -> Iterator[BinaryIO]:
    """The uncompressed tar read from the stored BLOB of LAYER, verified against the
    diff_id at EOF (or at the end of a block that stopped early)."""
    what = f"layer {layer.diff_id} (blob {layer.digest}) of {origin}"
    plain = decompressing_reader(blob, layer.compression, what)
    checker = VerifyingReader(plain, layer.diff_id, None, f"uncompressed {what}")
    yield cast(BinaryIO, io.BufferedReader(checker, COPY_CHUNK))
    checker.finish()


StoreCallback = Callable[[Path, Layer], Layer]


class LayerWriter:
    """File-like sink for an uncompressed layer tar.

    Bytes are hashed (diff_id) as written, compressed as the destination wants, and
    spooled to a temp file; ``finish(expected_diff_id)`` verifies and hands the blob to
    the destination. Leaving a ``with`` block without finish() discards everything.
    """

    def __init__(self, spool_dir: Path, compression: Compression, store: StoreCallback,
                 media_type: str) -> None:
        fd, name = tempfile.mkstemp(prefix=".layer-", dir=spool_dir)
        self._path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._blob = HashingWriter(cast(BinaryIO, self._file))
        self._codec = CompressingWriter(cast(BinaryIO, self._blob), compression)
        self._diff = new_hasher()
        self._media_type = media_type
        self._store = store
        self.uncompressed_size = 0
        self._done = False

    def write(self, data: bytes) -> int:
        """Add uncompressed tar bytes.

        Raises:
            StorageError: the spool file cannot be written (disk full...).
        """
        self._diff.update(data)
        self.uncompressed_size += len(data)
        try:
            return self._codec.write(data)
        except OSError as exc:
            raise StorageError(f"cannot spool layer to {self._path}: {exc}") from exc

    def finish(self, expected_diff_id: str) -> Layer:
        """Verify the diff_id and store the layer.

        Raises:
            IntegrityError: what was written does not hash to EXPECTED_DIFF_ID.
        """
        self._codec.close()
        self._file.close()
        diff_id = "sha256:" + self._diff.hexdigest()
        try:
            if diff_id != expected_diff_id:
                raise IntegrityError(
                    f"rebuilt layer has diff_id {diff_id}, expected {expected_diff_id}"
                )
            desc = Descriptor(self._media_type, self._blob.digest, self._blob.size)
            layer = self._store(self._path, Layer(desc, diff_id, self.uncompressed_size))
        finally:
            self._discard()
        self._done = True
        return layer

    def _discard(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    def abort(self) -> None:
        """Throw away what was written."""
        if not self._done:
            self._codec_close_quietly()
            self._discard()
            self._done = True

    def _codec_close_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self._codec.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()


def spool_verified(stream: BinaryIO, layer: Layer, spool_dir: Path, what: str) -> Path:
    """Copy STREAM into a temp file in SPOOL_DIR, verifying LAYER's digest and size.

    Raises:
        IntegrityError / TruncatedError: the bytes are not LAYER's blob.
    """
    fd, name = tempfile.mkstemp(prefix=".blob-", dir=spool_dir)
    path = Path(name)
    try:
        checker = VerifyingReader(stream, layer.digest, layer.size, what)
        with os.fdopen(fd, "wb") as out:
            buf = bytearray(COPY_CHUNK)
            view = memoryview(buf)
            while n := checker.readinto(view):
                out.write(view[:n])
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path



def archive_staging(reference: ImageReference, prefix: str) -> tuple[Path, Path]:
    """(target file, new staging dir beside it) for a destination written as one archive.

    The staging dir is in the target's folder, so the finished archive is renamed into
    place atomically.

    Raises:
        StorageError: the target's folder does not exist.
    """
    assert reference.path is not None
    target = reference.path.absolute()
    if not target.parent.is_dir():
        raise StorageError(f"{reference}: directory {target.parent} does not exist")
    return target, Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))


class ImageDestination:
    """Where an image is written. Subclasses implement the hooks below."""

    #: compression layer_writer() produces
    compression: Compression = Compression.GZIP
    #: whether copies should compress uncompressed blobs rather than store them as they are
    compress_uncompressed: bool = False

    def __init__(self, reference: ImageReference, options: TransportOptions) -> None:
        self.reference = reference
        self.options = options
        self._stored: dict[str, Layer] = {}
        self._committed = False
        self._closed = False

    # -- transport specific -------------------------------------------------------
    def _spool_dir(self) -> Path:
        raise NotImplementedError

    def _store_blob(self, path: Path, layer: Layer) -> Layer:
        """Take ownership of the verified blob file PATH (move or upload it)."""
        raise NotImplementedError

    def _blob_present(self, layer: Layer) -> bool:
        return False

    def _commit(self, config_bytes: bytes, layers: list[Layer],
                manifest_media_type: str | None, manifest_bytes: bytes | None) -> str:
        raise NotImplementedError

    def _abort(self) -> None:
        """Remove everything written so far."""

    def _finalize(self) -> None:
        """Release resources after commit or abort."""

    def accepts(self, compression: Compression) -> bool:
        """Whether put_blob can store a blob of this compression as it is."""
        return True

    def note_source(self, source: ImageReference) -> None:
        """Hint where blobs come from (a registry may mount them from there)."""

    # -- common --------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Finish: without a successful commit, remove everything partial."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._committed:
                self._abort()
        finally:
            self._finalize()

    def layer_writer(self) -> LayerWriter:
        """A writer for one uncompressed layer tar (compressed as this destination likes)."""
        media_type = mt.layer_media_type(self.compression, mt.OCI_MANIFEST)
        return LayerWriter(self._spool_dir(), self.compression, self._remember, media_type)

    def _remember(self, path: Path, layer: Layer) -> Layer:
        stored = self._store_blob(path, layer)
        self._stored[stored.digest] = stored
        return stored

    def put_blob(self, layer: Layer, stream: BinaryIO) -> Layer:
        """Store LAYER's blob as it is (pass-through), verified while copying; return
        the stored Layer.

        A destination that cannot hold that compression (see accepts(): docker-archive
        holds only uncompressed layers) gets the layer decompressed instead, checked
        against its diff_id: the returned Layer then has another digest.

        Raises:
            IntegrityError: STREAM is not LAYER's blob.
        """
        if not self.accepts(layer.compression):
            return self._put_converted(layer, stream)
        what = f"layer blob {layer.digest} for {self.reference}"
        try:
            path = spool_verified(stream, layer, self._spool_dir(), what)
            try:
                return self._remember(path, layer)
            finally:
                path.unlink(missing_ok=True)
        except OSError as exc:
            what = f"{self.reference}: cannot store blob {layer.digest}"
            raise StorageError(f"{what}: {exc}") from exc

    def _put_converted(self, layer: Layer, stream: BinaryIO) -> Layer:
        what = f"layer blob {layer.digest} for {self.reference}"
        checker = VerifyingReader(stream, layer.digest, layer.size, what)
        blob = cast(BinaryIO, io.BufferedReader(checker, COPY_CHUNK))
        with uncompressed_layer(layer, blob, self.reference) as tar, self.layer_writer() as writer:
            while chunk := tar.read(COPY_CHUNK):
                writer.write(chunk)
            checker.finish()  # the blob digest, including bytes after the compressed stream
            return writer.finish(layer.diff_id)

    def has_blob(self, layer: Layer) -> bool:
        """Whether LAYER's blob is already there (or was mounted), so no copy is needed."""
        if layer.digest in self._stored:
            return True
        if self.accepts(layer.compression) and self._blob_present(layer):
            self._stored[layer.digest] = layer
            return True
        return False

    def commit(self, config_bytes: bytes, layers: list[Layer], *,
               manifest_media_type: str | None = None,
               manifest_bytes: bytes | None = None) -> str:
        """Write config and manifest (last) naming LAYERS; return the manifest digest.

        MANIFEST_MEDIA_TYPE is a preference (Docker schema 2 or OCI); MANIFEST_BYTES, if
        given, is written verbatim when it names exactly this config and these blobs.

        Raises:
            IntegrityError: the config's diff_ids do not match LAYERS.
            StorageError: a layer was never stored here.
        """
        config = parse_config(config_bytes, f"config for {self.reference}")
        diff_ids = tuple(layer.diff_id for layer in layers)
        if config.diff_ids != diff_ids:
            raise IntegrityError(
                f"config diff_ids {list(config.diff_ids)} do not match the layers {list(diff_ids)}"
            )
        missing = [layer.digest for layer in layers if layer.digest not in self._stored]
        if missing:
            raise StorageError(f"{self.reference}: layers never stored here: {missing}")
        stored = [self._stored[layer.digest] for layer in layers]
        try:
            digest = self._commit(config_bytes, stored, manifest_media_type, manifest_bytes)
        except OSError as exc:
            raise StorageError(f"{self.reference}: cannot write the image: {exc}") from exc
        self._committed = True
        return digest


def manifest_matches(data: bytes, media_type: str, config_bytes: bytes,
                     layers: list[Layer]) -> Manifest | None:
    """The parsed manifest DATA if it names exactly CONFIG_BYTES and LAYERS, else None."""
    try:
        manifest = parse_manifest(data, media_type, "manifest to write")
    except FormatError:
        return None
    if manifest.config.digest != sha256_digest(config_bytes):
        return None
    if [d.digest for d in manifest.layers] != [layer.digest for layer in layers]:
        return None
    return manifest


