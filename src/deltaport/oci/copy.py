"""copy_image: any transport to any transport, verifying every byte on the way.

Per layer: skip it if the destination has it (or can mount it); pass the stored blob
through if the destination can hold its compression; otherwise decompress (checking
the diff_id) and let the destination recompress. The config is copied byte for byte,
so the image ID never changes; the manifest is kept verbatim when every blob passed
through unchanged and the destination supports its type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, cast

from deltaport.oci.base import COPY_CHUNK, ImageDestination, ImageSource, uncompressed_layer
from deltaport.oci.compression import Compression
from deltaport.oci.model import Layer
from deltaport.oci.options import TransportOptions
from deltaport.oci.reference import ImageReference
from deltaport.oci.transports import as_reference, open_destination, open_source


@dataclass(frozen=True)
class CopyProgress:
    """A progress report: STAGE is 'start', 'skip', 'bytes' or 'done' for layer DIGEST;
    DONE/TOTAL count stored bytes of that layer."""

    stage: str
    digest: str
    done: int
    total: int
    index: int
    count: int


ProgressCallback = Callable[[CopyProgress], None]


@dataclass(frozen=True)
class CopyResult:
    """What copy_image did."""

    source: str
    destination: str
    manifest_digest: str
    image_id: str
    layers: tuple[Layer, ...]
    copied: int
    skipped: int
    bytes_read: int


def copy_image(src: str | ImageReference, dst: str | ImageReference,
               options: TransportOptions | None = None, *,
               dest_options: TransportOptions | None = None,
               progress: ProgressCallback | None = None) -> CopyResult:
    """Copy an image from SRC to DST (like `skopeo copy`).

    OPTIONS apply to both ends unless DEST_OPTIONS is given for the destination.

    Raises:
        DeltaportError subclasses: see open_source/open_destination; on any error the
        destination is left without a partial image.
    """
    src_ref, dst_ref = as_reference(src), as_reference(dst)
    src_opts = options or TransportOptions()
    with open_source(src_ref, src_opts) as source, \
            open_destination(dst_ref, dest_options or src_opts) as dest:
        dest.note_source(src_ref)
        return _copy(source, dest, progress)


def _copy(source: ImageSource, dest: ImageDestination,
          progress: ProgressCallback | None) -> CopyResult:
    manifest_bytes, manifest_type = source.manifest_bytes()
    config_bytes = source.config_bytes()
    layers = source.layers()
    out: list[Layer] = []
    copied = skipped = bytes_read = 0
    for index, layer in enumerate(layers):
        report = _reporter(progress, layer, index, len(layers))
        if dest.has_blob(layer):
            report("skip", layer.size)
            out.append(layer)
            skipped += 1
            continue
        report("start", 0)
        new, count = _copy_layer(source, dest, layer, report)
        out.append(new)
        copied += 1
        bytes_read += count
        report("done", layer.size)
    unchanged = [x.digest for x in out] == [x.digest for x in layers]
    digest = dest.commit(config_bytes, out, manifest_media_type=manifest_type,
                         manifest_bytes=manifest_bytes if unchanged else None)
    return CopyResult(str(source.reference), str(dest.reference), digest, source.image_id(),
                      tuple(out), copied, skipped, bytes_read)


def _reporter(progress: ProgressCallback | None, layer: Layer, index: int,
              count: int) -> Callable[[str, int], None]:
    def report(stage: str, done: int) -> None:
        if progress is not None:
            progress(CopyProgress(stage, layer.digest, done, layer.size, index, count))
    return report


def _copy_layer(source: ImageSource, dest: ImageDestination, layer: Layer,
                report: Callable[[str, int], None]) -> tuple[Layer, int]:
    compression = layer.compression
    passthrough = dest.accepts(compression) and not (
        compression is Compression.NONE and dest.compress_uncompressed
    )
    if passthrough:
        with source.open_blob(layer) as blob:
            counted = _Counting(blob, report)
            return dest.put_blob(layer, cast(BinaryIO, counted)), counted.count
    with source.open_blob(layer) as blob:
        counted = _Counting(blob, report)
        with uncompressed_layer(layer, cast(BinaryIO, counted), source.reference) as plain, \
                dest.layer_writer() as writer:
            while chunk := plain.read(COPY_CHUNK):
                writer.write(chunk)
            return writer.finish(layer.diff_id), counted.count


class _Counting:
    """Counts bytes read from a stream and reports progress."""

    def __init__(self, inner: BinaryIO, report: Callable[[str, int], None]) -> None:
        self._inner = inner
        self._report = report
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.count += len(data)
        self._report("bytes", self.count)
        return data

    def readable(self) -> bool:
        return True
