"""Raw deflate with the one zlib deltaport ships: cmeel-zlib's libz 1.3.2, via ctypes.

Why: a patch may carry a ``.gz`` file's *content* and have the device re-gzip it;
that only gives the original bytes if the device runs exactly the deflate the
builder verified with. Python's ``zlib`` module is whatever libz the host has
(Debian 12: 1.2.13), so it cannot be that implementation. deltaport depends on
``cmeel-zlib==1.3.2``, a wheel holding ``cmeel.prefix/lib64/libz.so.1.3.2``; this
module loads exactly that file, checks ``zlibVersion()``, and never falls back to
the system libz: a missing or wrong library is an :class:`InstallationError`.

The library is loaded once, on first use, with ``RTLD_DEEPBIND`` so that its own
internal calls (``deflateInit2_`` -> ``deflateReset`` ...) bind to itself even when
the process has another libz loaded (Python's ``zlib`` extension does).
Only compression goes through here; inflate output is unique, so decompression may
use Python's ``zlib``.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from deltaport.errors import DeltaportError, FormatError, InstallationError

ZLIB_RELEASE = "1.3.2"
DISTRIBUTION = "cmeel-zlib"
LIBRARY = f"cmeel.prefix/lib64/libz.so.{ZLIB_RELEASE}"
# What a patch's meta names as its deflate (field `zlib_version`); the applier
# accepts exactly this string.
VERSION = f"zlib {ZLIB_RELEASE} ({DISTRIBUTION})"

RAW_WINDOW_BITS = -15  # raw deflate, 32 KiB window: the gzip member body
MEM_LEVEL = 8
_Z_DEFLATED = 8
_Z_DEFAULT_STRATEGY = 0
_Z_NO_FLUSH, _Z_FINISH = 0, 4
_Z_OK, _Z_STREAM_END, _Z_MEM_ERROR, _Z_BUF_ERROR = 0, 1, -4, -5
_MAX_CHUNK = 1 << 30  # avail_in / avail_out are 32-bit: at most this much per deflate() call


class _ZStream(ctypes.Structure):
    """zlib's ``z_stream`` (zlib.h); uInt is C unsigned int, uLong C unsigned long."""

    _fields_ = (
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    )


def locate_library(
    distribution: str = DISTRIBUTION, site_dirs: Sequence[Path] | None = None
) -> Path:
    """The pinned libz file of the installed distribution.

    Looks in the distribution's RECORD first, then under site_dirs (default: this
    interpreter's purelib and platlib). Never returns the system libz.

    Raises:
        InstallationError: the distribution or its library file is not installed.
    """
    candidates: list[Path] = []
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    candidates += [Path(str(f.locate())) for f in files if str(f).endswith(LIBRARY)]
    if site_dirs is None:
        paths = sysconfig.get_paths()
        site_dirs = [Path(paths["purelib"]), Path(paths["platlib"])]
    candidates += [d / LIBRARY for d in site_dirs]
    for path in candidates:
        if path.is_file():
            return path
    raise InstallationError(
        f"pinned zlib {ZLIB_RELEASE} not found ({distribution}: {LIBRARY}): reinstall deltaport"
    )


def load_library(path: Path) -> ctypes.CDLL:
    """Load the libz at path (its own symbols first) and check it is release 1.3.2.

    Raises:
        InstallationError: the file cannot be loaded or is another zlib release.
    """
    mode = os.RTLD_NOW | os.RTLD_LOCAL | getattr(os, "RTLD_DEEPBIND", 0)
    try:
        lib = ctypes.CDLL(str(path), mode=mode)
    except OSError as exc:
        raise InstallationError(f"pinned zlib {path} cannot be loaded: {exc}") from exc
    lib.zlibVersion.restype = ctypes.c_char_p
    lib.zlibVersion.argtypes = []
    found = (lib.zlibVersion() or b"").decode("ascii", "replace")
    if found != ZLIB_RELEASE:
        raise InstallationError(
            f"pinned zlib at {path} is release {found}, expected {ZLIB_RELEASE}: "
            "reinstall deltaport"
        )
    _declare(lib)
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    stream = ctypes.POINTER(_ZStream)
    lib.deflateInit2_.argtypes = [stream, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.deflateInit2_.restype = ctypes.c_int
    lib.deflate.argtypes = [stream, ctypes.c_int]
    lib.deflate.restype = ctypes.c_int
    lib.deflateEnd.argtypes = [stream]
    lib.deflateEnd.restype = ctypes.c_int
    lib.deflateBound.argtypes = [stream, ctypes.c_ulong]
    lib.deflateBound.restype = ctypes.c_ulong


@functools.cache
def _loaded() -> tuple[Path, ctypes.CDLL]:
    path = locate_library()
    return path, load_library(path)


def require() -> Path:
    """Load the pinned library now, so a broken install fails before any output.

    Returns the path of the loaded library (for diagnostics).

    Raises:
        InstallationError: the pinned zlib is missing or another release.
    """
    return _loaded()[0]


def deflate_raw(data: bytes, level: int) -> bytes:
    """Raw deflate of data (windowBits -15, memLevel 8, default strategy) with zlib 1.3.2.

    Same parameters as ``zlib.compressobj(level, DEFLATED, -15, 8, Z_DEFAULT_STRATEGY)``;
    the whole buffer goes through one deflateInit2_ / deflate(Z_FINISH) / deflateEnd
    sequence into a deflateBound-sized buffer (input over 1 GiB is fed in 1 GiB
    pieces, which does not change zlib's output).

    Raises:
        FormatError: level is not 0..9 (it comes from a patch).
        InstallationError: the pinned zlib is missing, another release, or refuses
            its own parameters (an ABI mismatch: valid input cannot cause that).
        DeltaportError: zlib ran out of memory.
    """
    if not 0 <= level <= 9:
        raise FormatError(f"deflate level {level} is not 0..9")
    lib = _loaded()[1]
    strm = _ZStream()
    ret = lib.deflateInit2_(ctypes.byref(strm), level, _Z_DEFLATED, RAW_WINDOW_BITS, MEM_LEVEL,
                            _Z_DEFAULT_STRATEGY, ZLIB_RELEASE.encode(), ctypes.sizeof(strm))
    if ret != _Z_OK:
        raise _error("deflateInit2_", ret, strm)
    try:
        return _run(lib, strm, bytes(data))
    finally:
        lib.deflateEnd(ctypes.byref(strm))


def _run(lib: ctypes.CDLL, strm: _ZStream, data: bytes) -> bytes:
    """deflate() data into one deflateBound-sized buffer until Z_STREAM_END."""
    bound = lib.deflateBound(ctypes.byref(strm), len(data))
    out = ctypes.create_string_buffer(bound)
    in_addr = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0
    out_addr = ctypes.addressof(out)
    while True:
        fed, made = strm.total_in, strm.total_out
        chunk = min(len(data) - fed, _MAX_CHUNK)
        strm.next_in, strm.avail_in = in_addr + fed, chunk
        strm.next_out, strm.avail_out = out_addr + made, min(bound - made, _MAX_CHUNK)
        flush = _Z_FINISH if fed + chunk == len(data) else _Z_NO_FLUSH
        ret = lib.deflate(ctypes.byref(strm), flush)
        if ret == _Z_STREAM_END:
            return ctypes.string_at(out_addr, strm.total_out)
        stalled = (strm.total_in, strm.total_out) == (fed, made)
        if ret not in (_Z_OK, _Z_BUF_ERROR) or stalled:
            raise _error("deflate", ret, strm)


def _error(call: str, ret: int, strm: _ZStream) -> DeltaportError:
    msg = (strm.msg or b"no message").decode("utf-8", "replace")
    if ret == _Z_MEM_ERROR:
        return DeltaportError(f"pinned zlib {call}: out of memory")
    return InstallationError(f"pinned zlib {call} failed ({ret}: {msg}): reinstall deltaport")
