"""Realistic demo images, built from this machine's own files, with no network.

Three layers, as a Dockerfile would make them: a "base" of real shared libraries and
executables, a "runtime" of the Python standard library, and an "app" of source files.
Version 2 is what a CI rebuild of an application update looks like: the base is
unchanged (same diff_id), the runtime gets a patch bump (a few files edited) and every
rebuilt layer carries new mtimes, the app has a few files edited and one added.
Version 3 is a broken release: its start script exits at once (the device's health
gate must catch it and roll back). The images really run: the base carries this
machine's static busybox, the app starts ``busybox httpd`` and the image config
names a HEALTHCHECK that fetches its page.
A third image, "tools", shares only the base layer: content a device may hold for
another reason, which a delta can still draw on. :class:`DemoSizes` sets how much of
this machine goes into the base and runtime layers (the demo shrinks them so a
1 Mbit/s link finishes in minutes; tests shrink them further).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import sysconfig
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deltaport.oci import TransportOptions, open_destination

BASE_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/bin")
BASE_BUDGET = 48 << 20  # bytes of real binaries in the base layer
RUNTIME_BUDGET = 24 << 20
APP_FILES = 120  # generated source files in the app layer


@dataclass(frozen=True)
class DemoSizes:
    """How big the demo images are: bytes taken from this machine per layer."""

    base: int = BASE_BUDGET  # real shared libraries and executables
    runtime: int = RUNTIME_BUDGET  # Python standard library sources
    app_files: int = APP_FILES
V1_EPOCH = 1_788_000_000
V2_EPOCH = V1_EPOCH + 30 * 86_400


@dataclass(frozen=True)
class LayerFile:
    """One regular file of a layer: its path in the image and where its bytes come from."""

    path: str
    data: bytes


def _host_files(dirs: tuple[str, ...], budget: int, suffixes: tuple[str, ...] = ()) -> list[Path]:
    """Regular files under DIRS, in sorted order, until BUDGET bytes."""
    picked: list[Path] = []
    used = 0
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*")):
            if not p.is_file() or p.is_symlink() or (suffixes and p.suffix not in suffixes):
                continue
            size = p.stat().st_size
            if size == 0 or size > 8 << 20 or used + size > budget:
                continue
            picked.append(p)
            used += size
    return picked


def _stdlib_dir() -> str:
    debian = Path("/usr/lib/python3.11")
    return str(debian) if debian.is_dir() else sysconfig.get_paths()["stdlib"]


START_SCRIPT = b"""#!/bin/busybox sh
echo "demo app v$APP_VERSION starting"
exec /bin/busybox httpd -f -v -p 127.0.0.1:8080 -h /app/www
"""
BROKEN_START_SCRIPT = b"""#!/bin/busybox sh
echo "demo app v$APP_VERSION starting"
echo "fatal: /app/config/settings.json: no such file or directory" >&2
exit 3
"""
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: one real, static executable


def _app_source(n: int, version: int) -> list[LayerFile]:
    """N deterministic, code-like source files; version 2 edits four and adds one;
    version 3 is version 2 with a start script that fails."""
    rng = random.Random(1234)
    words = ["request", "response", "device", "image", "layer", "bundle", "status", "retry",
             "timeout", "config", "return", "const", "await", "async", "function", "if"]
    files = []
    for i in range(n):
        lines = [
            f"const {rng.choice(words)}{j} = {rng.choice(words)}({rng.randint(0, 9999)});"
            for j in range(rng.randint(40, 400))
        ]
        text = "\n".join(lines)
        if version >= 2 and i in (3, 17, 42, 77):
            text = text.replace("retry", "retryWithBackoff") + "\n// v2: handle link drops\n"
        files.append(LayerFile(f"app/src/module{i:03d}.js", text.encode()))
    if version >= 2:
        files.append(LayerFile("app/src/health.js", b"export const health = () => 'ok';\n"))
    files.append(LayerFile("app/www/index.html", f"demo app v{version}\n".encode()))
    files.append(LayerFile("app/start.sh", BROKEN_START_SCRIPT if version == 3 else START_SCRIPT))
    return files


def _runtime_files(version: int, budget: int = RUNTIME_BUDGET) -> list[LayerFile]:
    root = Path(_stdlib_dir())
    out = []
    for i, p in enumerate(_host_files((str(root),), budget, (".py",))):
        data = p.read_bytes()
        if version == 2 and i % 97 == 5:  # a patch release touches a handful of modules
            data = data + b"\n# patched in runtime 3.11.8\n"
        out.append(LayerFile("usr/local/lib/python3.11/" + str(p.relative_to(root)), data))
    return out


def _base_files(budget: int = BASE_BUDGET) -> list[LayerFile]:
    files = [LayerFile("bin/busybox", BUSYBOX.read_bytes())] if BUSYBOX.is_file() else []
    return files + [
        LayerFile(str(p).lstrip("/"), p.read_bytes())
        for p in _host_files(BASE_DIRS, budget - sum(len(f.data) for f in files))
    ]


def _layer_tar(files: list[LayerFile], mtime: int) -> bytes:
    """A deterministic tar of FILES with their parent directories."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        seen: set[str] = set()
        for f in files:
            parts = f.path.split("/")[:-1]
            for k in range(1, len(parts) + 1):
                d = "/".join(parts[:k])
                if d not in seen:
                    seen.add(d)
                    info = tarfile.TarInfo(d + "/")
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
                    tar.addfile(info)
            info = tarfile.TarInfo(f.path)
            info.size, info.mode, info.mtime = len(f.data), 0o755, mtime
            tar.addfile(info, io.BytesIO(f.data))
    return buf.getvalue()


def demo_layers(version: int, sizes: DemoSizes | None = None) -> list[bytes]:
    """The uncompressed layer tars of demo image VERSION (1, 2 or the broken 3)."""
    sizes = sizes or DemoSizes()
    base = _layer_tar(_base_files(sizes.base), V1_EPOCH)
    epoch = {1: V1_EPOCH, 2: V2_EPOCH}.get(version, V2_EPOCH + 7 * 86_400)
    runtime = _layer_tar(_runtime_files(version, sizes.runtime), epoch + 60)
    app = _layer_tar(_app_source(sizes.app_files, version), epoch + 120)
    return [base, runtime, app]


def tools_layers(sizes: DemoSizes | None = None) -> list[bytes]:
    """The layer tars of the "tools" image: the demo's base layer and a layer of scripts."""
    sizes = sizes or DemoSizes()
    rng = random.Random(99)
    scripts = [
        LayerFile(f"opt/tools/bin/tool{i:02d}.sh",
                  "\n".join(f"echo step {rng.randint(0, 10**6)}" for _ in range(200)).encode())
        for i in range(20)
    ]
    return [_layer_tar(_base_files(sizes.base), V1_EPOCH), _layer_tar(scripts, V1_EPOCH + 600)]


_HISTORY = {
    "app": ("COPY base /", "COPY python3.11 /usr/local", "COPY app /app"),
    "tools": ("COPY base /", "COPY tools /opt/tools"),
}


def _config(diff_ids: list[str], version: int, kind: str = "app") -> bytes:
    created = {1: "2026-09-10T00:00:00Z", 2: "2026-10-10T00:00:00Z"}.get(
        version, "2026-10-17T00:00:00Z")
    config: dict[str, object] = {"Cmd": ["/usr/bin/true"], "Env": [f"APP_VERSION={version}"]}
    if kind == "app":
        config["Cmd"] = ["/bin/busybox", "sh", "/app/start.sh"]
        config["Healthcheck"] = {  # nanoseconds, as the image config spec has it
            "Test": ["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null",
                     "http://127.0.0.1:8080/"],
            "Interval": 2_000_000_000, "Timeout": 2_000_000_000, "Retries": 3,
        }
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": step} for step in _HISTORY[kind]],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def write_demo_image(
    version: int, dest_ref: str, options: TransportOptions, sizes: DemoSizes | None = None
) -> str:
    """Build demo image VERSION and write it to DEST_REF; returns its image ID."""
    return _write_image(demo_layers(version, sizes), version, "app", dest_ref, options)


def write_tools_image(
    dest_ref: str, options: TransportOptions, sizes: DemoSizes | None = None
) -> str:
    """Build the "tools" image (shares the base layer) and write it to DEST_REF; its image ID."""
    return _write_image(tools_layers(sizes), 1, "tools", dest_ref, options)


def _write_image(
    layers: list[bytes], version: int, kind: str, dest_ref: str, options: TransportOptions
) -> str:
    diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers]
    config = _config(diff_ids, version, kind)
    with open_destination(dest_ref, options) as dest:
        written = []
        for tar_bytes, diff_id in zip(layers, diff_ids, strict=True):
            writer = dest.layer_writer()
            for chunk in _chunks(tar_bytes):
                writer.write(chunk)
            written.append(writer.finish(diff_id))
        dest.commit(config, written)
    return "sha256:" + hashlib.sha256(config).hexdigest()


def _chunks(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), size):
        yield bytes(view[i : i + size])
