"""Size and single-core speed of candidate compressors on one slice of a file.

Used to choose the codecs of patch sections (bench/NOTES.md quotes its output):

    .venv/bin/python bench/codec_probe.py /tmp/s0-elf.bin \
        --elf-from /work/benchdata/public/images/appA-v1.docker.tar \
        --offset 60000000 --length 32000000 \
        xz-6 xz-bt4-n24-d8 xz-bt4-n32-d4 xz-hc4-n16-d8 xz-fast-hc4-n64 zstd-19 zstd-16

``--elf-from`` first writes FILE: the content of every ELF file in the image's layers,
in layer and tar order (what the elf sections of its first-image bundle hold).

Every xz candidate is x86 BCJ + LZMA2 (as the elf section); ``--no-bcj`` drops the
filter (for text). zstd candidates use long-distance matching and a 32 MiB window.
"""

from __future__ import annotations

import argparse
import json
import lzma
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import zstandard

Codec = Callable[[bytes], bytes]


def _xz(nice: int, depth: int, mode: int = lzma.MODE_NORMAL, mf: int | None = None,
        bcj: bool = True) -> Codec:
    lzma2: dict[str, int] = {"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 32 << 20,
                             "nice_len": nice, "depth": depth, "mode": mode}
    if mf is not None:
        lzma2["mf"] = mf
    filters = ([{"id": lzma.FILTER_X86}] if bcj else []) + [lzma2]
    return lambda data: lzma.compress(data, format=lzma.FORMAT_XZ, filters=filters)


def _zstd(level: int) -> Codec:
    params = zstandard.ZstdCompressionParameters.from_level(level, window_log=25, enable_ldm=True)
    return zstandard.ZstdCompressor(compression_params=params).compress


def candidates(bcj: bool) -> dict[str, Codec]:
    """Every candidate by name."""
    return {
        "xz-6": _xz(32, 16, bcj=bcj),  # what the elf section uses (sections._xz_filters)
        "xz-bt4-n24-d8": _xz(24, 8, bcj=bcj),
        "xz-bt4-n32-d4": _xz(32, 4, bcj=bcj),
        "xz-hc4-n16-d8": _xz(16, 8, mf=lzma.MF_HC4, bcj=bcj),
        "xz-fast-hc4-n64": _xz(64, 0, lzma.MODE_FAST, lzma.MF_HC4, bcj=bcj),
        **{f"zstd-{level}": _zstd(level) for level in (19, 18, 17, 16, 15)},
    }


def write_elf_stream(archive: Path, out: Path) -> None:
    """The ELF files of a docker-save archive's layers, concatenated, into ``out``."""
    with tarfile.open(archive) as image, open(out, "wb") as sink:
        manifest = json.load(image.extractfile("manifest.json"))  # type: ignore[arg-type]
        for name in manifest[0]["Layers"]:
            with tarfile.open(fileobj=image.extractfile(name)) as layer:
                for member in layer:
                    stream = layer.extractfile(member) if member.isfile() else None
                    if stream is not None and stream.read(4) == b"\x7fELF":
                        sink.write(b"\x7fELF" + stream.read())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("file", type=Path)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--length", type=int, default=32_000_000)
    p.add_argument("--no-bcj", action="store_true")
    p.add_argument("--elf-from", type=Path, help="docker-save archive: write FILE from it")
    p.add_argument("codecs", nargs="+")
    args = p.parse_args()
    if args.elf_from:
        write_elf_stream(args.elf_from, args.file)
    with open(args.file, "rb") as f:
        f.seek(args.offset)
        data = f.read(args.length)
    table = candidates(not args.no_bcj)
    base: int | None = None
    print(f"{len(data)} bytes of {args.file} from offset {args.offset}")
    for name in args.codecs:
        start = time.perf_counter()
        size = len(table[name](data))
        speed = len(data) / (time.perf_counter() - start) / 1e6
        base = base or size
        print(f"{name:18s} {size / 1e6:8.3f} MB  {100 * (size / base - 1):+6.1f} %  "
              f"{speed:5.2f} MB/s on one core", flush=True)


if __name__ == "__main__":
    main()
