#!/usr/bin/env python3
"""Corpus 2: distroless-style Python services built from pinned Debian packages and wheels.

Unlike the public corpus (debootstrap Debian + Node.js + npm), every image here is a
distroless-style base: no apt, no shell but busybox-static, just the extracted ``.deb``
contents of libc, OpenSSL, zlib, tzdata, CA certificates; a CPython 3.11 runtime from
Debian's packages with its standard library byte-compiled; a venv of real PyPI wheels
(C extensions: SQLAlchemy, greenlet, pydantic-core, orjson, uvloop, httptools), and the
app's source. Service B also carries a C health probe compiled here with gcc.

usage: build.py --out DATA_DIR [--arch arm64]   (root not needed; writes DATA_DIR/corpus2/,
       or DATA_DIR/corpus2-arm64/: the same images from arm64 .debs and aarch64 wheels,
       the probe cross-compiled; pins in arm64.py)

Inputs are pinned: Debian packages by exact version (``apt-get download name=version``),
wheels by exact file name and sha256. A failed or mismatching download names the input
and exits 2. Layers are written by the public corpus's ocibuild.py (sorted entries, numeric
owners, mtimes clamped to the layer's epoch), found at ``$BENCH_OCIBUILD`` (default
/work/shared/bench/corpus).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import arm64  # noqa: E402  (the arm64 pins, next to this file)

APPS = HERE / "apps"
OCIBUILD = Path(os.environ.get("BENCH_OCIBUILD", "/work/shared/bench/corpus"))
PYVER = "3.11"


class InputError(Exception):
    """A pinned input could not be fetched or did not match its pin."""


@dataclass(frozen=True)
class Deb:
    name: str
    version: str

    @property
    def pin(self) -> str:
        return f"{self.name}={self.version}"


@dataclass(frozen=True)
class Wheel:
    file: str
    sha256: str

    @property
    def requirement(self) -> str:
        name, version = self.file.split("-")[:2]
        return f"{name}=={version}"


# -- pinned inputs --------------------------------------------------------------------------
# base v1: bookworm point-release / older package versions; base v2: the security and point
# updates a month later, plus two more packages (tini, libcap2).
BASE_COMMON = (
    Deb("base-files", "12.4+deb12u15"), Deb("netbase", "6.4"), Deb("media-types", "10.0.0"),
    Deb("libc6", "2.36-9+deb12u14"), Deb("libgcc-s1", "12.2.0-14+deb12u1"),
    Deb("libstdc++6", "12.2.0-14+deb12u1"), Deb("libcrypt1", "1:4.4.33-2"),
    Deb("libffi8", "3.4.4-1"), Deb("libbz2-1.0", "1.0.8-5+b1"),
    Deb("busybox-static", "1:1.35.0-4+deb12u1+b1"),
)
BASE_V1 = (*BASE_COMMON,
           Deb("libssl3", "3.0.17-1~deb12u2"), Deb("openssl", "3.0.17-1~deb12u2"),
           Deb("zlib1g", "1:1.2.13.dfsg-1"), Deb("liblzma5", "5.4.1-1+deb12u1"),
           Deb("libzstd1", "1.5.4+dfsg2-5"), Deb("libexpat1", "2.5.0-1+deb12u2"),
           Deb("libuuid1", "2.38.1-5+deb12u1"), Deb("tzdata", "2025b-0+deb12u1"),
           Deb("ca-certificates", "20230311+deb12u1"))
BASE_V2 = (*BASE_COMMON,
           Deb("libssl3", "3.0.22-1~deb12u2"), Deb("openssl", "3.0.22-1~deb12u2"),
           Deb("zlib1g", "1:1.2.13.dfsg-1+deb12u1"), Deb("liblzma5", "5.4.1-1+deb12u2"),
           Deb("libzstd1", "1.5.4+dfsg2-5+deb12u1"), Deb("libexpat1", "2.5.0-1+deb12u5"),
           Deb("libuuid1", "2.38.1-5+deb12u3"), Deb("tzdata", "2026f-0+deb12u1"),
           Deb("ca-certificates", "20250419~deb12u2"),
           Deb("tini", "0.19.0-1+b3"), Deb("libcap2", "1:2.66-4+deb12u3+b1"))
PY_DEPS = (Deb("libsqlite3-0", "3.40.1-2+deb12u2"), Deb("libncursesw6", "6.4-4"),
           Deb("libtinfo6", "6.4-4"), Deb("libreadline8", "8.2-1.3"),
           Deb("readline-common", "8.2-1.3"), Deb("libdb5.3", "5.3.28+dfsg2-1"),
           Deb("libgdbm6", "1.23-3"), Deb("libnsl2", "1.3.0-2"), Deb("libtirpc3", "1.3.3+ds-1"),
           Deb("libkrb5-3", "1.20.1-2+deb12u5"), Deb("libgssapi-krb5-2", "1.20.1-2+deb12u5"),
           Deb("libk5crypto3", "1.20.1-2+deb12u5"), Deb("libkrb5support0", "1.20.1-2+deb12u5"),
           Deb("libcom-err2", "1.47.0-2+b2"), Deb("libkeyutils1", "1.6.3-2"))


def python_debs(version: str) -> tuple[Deb, ...]:
    names = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "python3.11")
    return (*(Deb(n, version) for n in names), *PY_DEPS)


PY_V1, PY_V2 = "3.11.2-6+deb12u8", "3.11.2-6+deb12u9"
WHEELS = {w.file: w for w in (
    Wheel("MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "b91c037585eba9095565a3556f611e3cbfaa42ca1e865f7b8015fe5c7336d5a5"),
    Wheel("SQLAlchemy-2.0.31-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "2196208432deebdfe3b22185d46b08f00ac9d7b01284e168c212919891289396"),
    Wheel("annotated_types-0.6.0-py3-none-any.whl",
          "0641064de18ba7a25dee8f96403ebc39113d0cb953a01429249d5c7564666a43"),
    Wheel("anyio-4.3.0-py3-none-any.whl",
          "048e05d0f6caeed70d731f3db756d35dcc1f35747c8c403364a8332c630441b8"),
    Wheel("blinker-1.8.2-py3-none-any.whl",
          "1779309f71bf239144b9399d06ae925637cf6634cf6bd131104184531bf67c01"),
    Wheel("click-8.1.7-py3-none-any.whl",
          "ae74fb96c20a0277a1d615f1e4d73c8414f5a98db8b799a7931d1582f3390c28"),
    Wheel("fastapi-0.110.0-py3-none-any.whl",
          "87a1f6fb632a218222c5984be540055346a8f5d8a68e8f6fb647b1dc9934de4b"),
    Wheel("flask-3.0.3-py3-none-any.whl",
          "34e815dfaa43340d1d15a5c3a02b8476004037eb4840b34910c6e21679d288f3"),
    Wheel("greenlet-3.0.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "2797aa5aedac23af156bbb5a6aa2cd3427ada2972c828244eb7d1b9255846379"),
    Wheel("gunicorn-22.0.0-py3-none-any.whl",
          "350679f91b24062c86e386e198a15438d53a7a8207235a78ba1b53df4c4378d9"),
    Wheel("h11-0.14.0-py3-none-any.whl",
          "e3fe4ac4b851c468cc8363d500db52c2ead036020723024a109d37346efaa761"),
    Wheel("httptools-0.6.1-cp311-cp311-manylinux_2_5_x86_64.manylinux1_x86_64."
          "manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "7d9ceb2c957320def533671fc9c715a80c47025139c8d1f3797477decbc6edd2"),
    Wheel("idna-3.6-py3-none-any.whl",
          "c05567e9c24a6b9faaa835c4821bad0590fbb9d5779e7caa6e1cc4978e7eb24f"),
    Wheel("itsdangerous-2.2.0-py3-none-any.whl",
          "c6242fc49e35958c8b15141343aa660db5fc54d4f13a1db01a3f5891b98700ef"),
    Wheel("jinja2-3.1.4-py3-none-any.whl",
          "bc5dd2abb727a5319567b7a813e6a2e7318c39f4f487cfe6c89c6f9c7d25197d"),
    Wheel("orjson-3.10.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "414e5293b82373606acf0d66313aecb52d9c8c2404b1900683eb32c3d042dbd7"),
    Wheel("packaging-24.1-py3-none-any.whl",
          "5b8f2217dbdbd2f7f384c41c628544e6d52f2d0f53c6d0c3ea61aa5d1d7ff124"),
    Wheel("pydantic-2.6.4-py3-none-any.whl",
          "cc46fce86607580867bdc3361ad462bab9c222ef042d3da86f2fb333e1d916c5"),
    Wheel("pydantic_core-2.16.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "a6b1bb0827f56654b4437955555dc3aeeebeddc47c2d7ed575477f082622c49e"),
    Wheel("sniffio-1.3.1-py3-none-any.whl",
          "2f6da418d1f1e0fddd844478f41680e794e6051915791a034ff65e5f100525a2"),
    Wheel("starlette-0.36.3-py3-none-any.whl",
          "13d429aa93a61dc40bf503e8c801db1f1bca3dc706b10ef2434a36123568f044"),
    Wheel("typing_extensions-4.12.2-py3-none-any.whl",
          "04e5ca0351e0f3f85c6853954072df659d0d13fac324d0072316b67d7794700d"),
    Wheel("uvicorn-0.29.0-py3-none-any.whl",
          "2c2aac7ff4f4365c206fd773a39bf4ebd1047c238f8b8268ad996829323473de"),
    Wheel("uvloop-0.19.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "5138821e40b0c3e6c9478643b4660bd44372ae1e16a322b8fc07478f92684e24"),
    Wheel("werkzeug-3.0.3-py3-none-any.whl",
          "fc9645dc43e03e4d630d23143a04a7f947a9a3b5727cd535fdfe155a17cc48c8"),
    Wheel("werkzeug-3.0.4-py3-none-any.whl",
          "02c9eb92b7d6c06f31a782811505d2157837cea66aaede3e217c7c27c039476c"),
)}

ARM64_WHEELS = {
    **{f: w for f, w in WHEELS.items() if f.endswith("-none-any.whl")},
    **{f: Wheel(f, sha) for f, sha in arm64.WHEELS.items()},
}


@dataclass(frozen=True)
class Arch:
    """What differs between the amd64 corpus and its arm64 variant."""

    name: str  # the image config's architecture
    variant: str  # the corpus directory under --out
    wheel_platform: str
    cc: str
    wheels: Mapping[str, Wheel]


ARCHES = {a.name: a for a in (
    Arch("amd64", "corpus2", "manylinux2014_x86_64", "gcc", WHEELS),
    Arch("arm64", "corpus2-arm64", arm64.PLATFORM, arm64.CC, ARM64_WHEELS),
)}


# S2: service A v2 = four source files edited and werkzeug 3.0.3 -> 3.0.4.
# Each edit is (file, old text, new text); the old text must occur exactly once.
SVC_A_V2_EDITS: tuple[tuple[str, str, str], ...] = (
    ("app/views.py", '    return jsonify(status="ok")\n',
     '    return jsonify(status="ok", version=current_app.config["VERSION"])\n'),
    ("app/factory.py", '        JSON_SORT_KEYS=False,\n',
     '        JSON_SORT_KEYS=False,\n        VERSION=os.environ.get("APP_VERSION", "2.0.0"),\n'),
    ("app/validate.py", "    if not isinstance(qty, int) or qty < 0:\n",
     "    if isinstance(qty, bool) or not isinstance(qty, int) or qty < 0:\n"),
    ("gunicorn.conf.py", "timeout = 30\n", "timeout = 45\ngraceful_timeout = 20\n"),
)
SVC_A_V2_BUMP = ("werkzeug==3.0.3", "werkzeug==3.0.4")

# S3: the C health probe is recompiled from its next source version (retries, longer timeout),
# so the base update also carries a rebuilt executable whose code and branch targets shifted.
PROBE = "probe/healthprobe.c"
PROBE_V2_EDITS: tuple[tuple[str, str, str], ...] = (
    (PROBE, "    int rc = probe(host, port, path, 3);\n",
     "    int rc = 1;\n    for (int i = 0; i < 3 && rc != 0; i++) {\n"
     "        rc = probe(host, port, path, 5);\n        if (rc != 0) usleep(200000);\n    }\n"),
    (PROBE, "    if (got < 12) return 1;\n",
     "    if (got < 12) return got < 0 ? 3 : 1;\n"),
)


# -- pure helpers (tested in tests/bench/test_corpus2.py) -------------------------------------
def apply_edits(files: dict[str, str], edits: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """Return ``files`` with each (file, old, new) edit applied; old must occur exactly once."""
    out = dict(files)
    for name, old, new in edits:
        if name not in out:
            raise InputError(f"edit names {name!r}, not a file of the app")
        count = out[name].count(old)
        if count != 1:
            raise InputError(f"edit of {name}: expected text found {count} times, not once")
        out[name] = out[name].replace(old, new)
    return out


def bump_requirement(text: str, old: str, new: str) -> str:
    """Replace the pinned line ``old`` by ``new`` in a requirements file."""
    lines = text.splitlines()
    if lines.count(old) != 1:
        raise InputError(f"requirements: {old!r} is not pinned exactly once")
    return "\n".join(new if line == old else line for line in lines) + "\n"


def wheels_for(requirements: str, pinned: Mapping[str, Wheel] = WHEELS) -> list[Wheel]:
    """The pinned wheels for a requirements file of ``name==version`` lines."""
    by_req = {_norm(w.requirement): w for w in pinned.values()}
    out = []
    for line in requirements.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        wheel = by_req.get(_norm(line))
        if wheel is None:
            raise InputError(f"requirement {line!r} has no pinned wheel (file name + sha256)")
        out.append(wheel)
    return out


def _norm(req: str) -> str:
    return req.lower().replace("-", "_")


def ca_bundle(certs: dict[str, bytes]) -> bytes:
    """/etc/ssl/certs/ca-certificates.crt as update-ca-certificates writes it: sorted, joined."""
    parts = []
    for name in sorted(certs):
        data = certs[name]
        parts.append(data if data.endswith(b"\n") else data + b"\n")
    return b"".join(parts)


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -- fetching -------------------------------------------------------------------------------
def fetch_debs(debs: Sequence[Deb], cache: Path) -> list[Path]:
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for deb in debs:
        fname = f"{deb.name}_{deb.version.replace(':', '%3a')}_"
        found = sorted(cache.glob(fname + "*.deb"))
        if not found:
            r = subprocess.run(["apt-get", "download", "-q", deb.pin], cwd=cache,
                               capture_output=True, text=True)
            found = sorted(cache.glob(fname + "*.deb"))
            if r.returncode != 0 or not found:
                raise InputError(f"apt-get download {deb.pin} failed: {r.stderr.strip()[-300:]}")
        out.append(found[0])
    return out


def fetch_wheels(wheels: Sequence[Wheel], cache: Path,
                 platform: str = "manylinux2014_x86_64") -> list[Path]:
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for w in wheels:
        path = cache / w.file
        if not path.exists():
            r = subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                 "--only-binary=:all:", "--platform", platform,
                 "--python-version", PYVER, "--implementation", "cp", "--abi", "cp311",
                 "-d", str(cache), w.requirement], capture_output=True, text=True)
            if r.returncode != 0 or not path.exists():
                raise InputError(f"pip download {w.requirement} ({w.file}) failed: "
                                 f"{r.stderr.strip()[-300:]}")
        got = sha256_of(path)
        if got != w.sha256:
            raise InputError(f"{w.file}: sha256 {got}, pinned {w.sha256}")
        out.append(path)
    return out


# -- stagers (fill a layer's directory) -----------------------------------------------------
Stager = Callable[[str], None]
DROP = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/lintian",
        "usr/share/locale", "usr/share/bug", "usr/share/menu")


def _extract_debs(debs: Sequence[Path], root: Path) -> None:
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    for rel in DROP:
        shutil.rmtree(root / rel, ignore_errors=True)


def busybox_applets(amd64_deb: Path, scratch: Path) -> list[str]:
    """The applets of busybox-static, listed by the amd64 build of the package.

    Debian builds busybox-static from one config for every architecture, so its arm64 binary
    (which cannot run here) has the same applets."""
    shutil.rmtree(scratch, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(amd64_deb), str(scratch)], check=True)
    out = subprocess.run([str(scratch / "bin/busybox"), "--list"], check=True,
                         capture_output=True, text=True).stdout.split()
    shutil.rmtree(scratch)
    return sorted(out)


def base_stager(debs: Sequence[Path], applets: Sequence[str]) -> Stager:
    """A distroless-style root: the packages' files, passwd/group, CA bundle, busybox links."""

    def fill(target: str) -> None:
        root = Path(target)
        _extract_debs(debs, root)
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\n"
                                         "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
        (root / "etc/group").write_text("root:x:0:\nnonroot:x:65532:\n")
        (root / "etc/os-release").write_text('PRETTY_NAME="Distroless-style (Debian 12)"\n')
        mozilla = root / "usr/share/ca-certificates/mozilla"
        certs = {p.name: p.read_bytes() for p in mozilla.glob("*.crt")}
        (root / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
        (root / "etc/ssl/certs/ca-certificates.crt").write_bytes(ca_bundle(certs))
        for d in ("tmp", "home/nonroot", "root", "data"):
            (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / "tmp", 0o1777)
        for name in applets:
            link = root / "bin" / name
            if not link.exists() and not link.is_symlink() and name != "busybox":
                link.symlink_to("busybox")

    return fill


def _compile(root: Path, tree: Path, workers: int = 2) -> None:
    """Byte-compile ``tree`` (timestamp pycs, as Debian's py3compile and pip do)."""
    subprocess.run([f"/usr/bin/python{PYVER}", "-m", "compileall", "-q", "-j", str(workers),
                    "-s", str(root), "-p", "/", str(tree)], check=True,
                   stdout=subprocess.DEVNULL)


def runtime_stager(debs: Sequence[Path]) -> Stager:
    """COPY --from=build the CPython runtime (Debian's packages), stdlib byte-compiled."""

    def fill(target: str) -> None:
        root = Path(target)
        _extract_debs(debs, root)
        (root / "usr/bin/python3").symlink_to(f"python{PYVER}")
        (root / "usr/bin/python").symlink_to(f"python{PYVER}")
        stdlib = root / f"usr/lib/python{PYVER}"
        shutil.rmtree(stdlib / "test", ignore_errors=True)
        _compile(root, stdlib)

    return fill


def venv_stager(wheels: Sequence[Path], epoch: int, dest: str = "/app/.venv") -> Stager:
    """RUN python -m venv + pip install --no-deps: wheels unpacked, files stamped at build time."""

    def fill(target: str) -> None:
        root = Path(target)  # staged at /app
        venv = root / Path(dest).relative_to("/app")
        site = venv / f"lib/python{PYVER}/site-packages"
        site.mkdir(parents=True)
        (venv / "bin").mkdir()
        (venv / "bin/python").symlink_to(f"/usr/bin/python{PYVER}")
        (venv / "bin/python3").symlink_to("python")
        (venv / "lib64").symlink_to("lib")
        (venv / "pyvenv.cfg").write_text(f"home = /usr/bin\ninclude-system-site-packages = false\n"
                                         f"version = {PYVER}.2\n")
        for whl in wheels:
            with zipfile.ZipFile(whl) as z:
                z.extractall(site)
                for info in z.infolist():
                    if info.filename.endswith(".so"):
                        os.chmod(site / info.filename, 0o755)
            for dist in site.glob("*.dist-info"):
                (dist / "INSTALLER").write_text("pip\n")
        for script, module in (("gunicorn", "gunicorn.app.wsgiapp"), ("uvicorn", "uvicorn.main")):
            if (site / script).is_dir():
                p = venv / "bin" / script
                p.write_text(f"#!{dest}/bin/python\nimport sys\nfrom {module} import run\n"
                             f"sys.exit(run())\n" if script == "gunicorn" else
                             f"#!{dest}/bin/python\nimport sys\nfrom {module} import main\n"
                             f"sys.exit(main())\n")
                p.chmod(0o755)
        for dp, dns, fns in os.walk(venv):
            for n in dns + fns:
                os.utime(os.path.join(dp, n), (epoch, epoch), follow_symlinks=False)
        stage_root = root.parent  # stage dir holding app/
        _compile(stage_root, site)

    return fill


def source_stager(files: dict[str, str], compile_probe: bool, cc: str = "gcc") -> Stager:
    """COPY . /app (files written in sorted order); optionally compile the probe in ``files``."""

    def fill(target: str) -> None:
        root = Path(target)
        for name, text in sorted(files.items()):
            p = root / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        if compile_probe:
            (root / "bin").mkdir(exist_ok=True)
            subprocess.run(["nice", "-n", "19", cc, "-O2", "-s", "-frandom-seed=probe",
                            "-o", "bin/healthprobe", PROBE], check=True, cwd=root)

    return fill


def read_app(name: str) -> dict[str, str]:
    base = APPS / name
    return {str(p.relative_to(base)): p.read_text()
            for p in sorted(base.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


# -- the corpus -------------------------------------------------------------------------------
def build(data: Path, arch: Arch = ARCHES["amd64"]) -> None:
    sys.path.insert(0, str(OCIBUILD))
    import ocibuild  # type: ignore[import-not-found]
    from ocibuild import Builder, Image, epoch_of

    if arch.name != "amd64":
        ocibuild.json = arm64.ConfigArch(arch.name)
        if shutil.which(arch.cc) is None:
            raise InputError(f"{arch.cc} not found (apt-get install gcc-aarch64-linux-gnu "
                             f"libc6-dev-arm64-cross)")
    b = Builder(str(data), arch.variant)
    debs = Path(b.cache) / "debs2"
    wheels = Path(b.cache) / ("wheels2" if arch.name == "amd64" else f"wheels2-{arch.name}")
    busybox = next(d for d in BASE_COMMON if d.name == "busybox-static")
    applets = busybox_applets(fetch_debs([busybox], debs)[0], Path(b.work) / "busybox")

    def fetch(pins: Sequence[Deb]) -> list[Path]:
        if arch.name == "amd64":
            return fetch_debs(pins, debs)
        try:
            return arm64.fetch_debs([d.pin for d in pins], Path(b.cache) / "debs2-arm64")
        except arm64.FetchError as exc:
            raise InputError(str(exc)) from exc

    base1, base2 = fetch(BASE_V1), fetch(BASE_V2)
    py1, py2 = fetch(python_debs(PY_V1)), fetch(python_debs(PY_V2))

    b.copy("base-v1", base_stager(base1, applets), "/", epoch_of("2026-09-01"),
           created_by="distroless-style base: " + " ".join(d.pin for d in BASE_V1))
    b.copy("base-v2", base_stager(base2, applets), "/", epoch_of("2026-10-15"),
           created_by="distroless-style base: " + " ".join(d.pin for d in BASE_V2))
    b.copy("py-v1", runtime_stager(py1), "/", epoch_of("2026-09-02"),
           created_by=f"COPY --from=build python3.11 {PY_V1} /usr")
    b.copy("py-v2", runtime_stager(py2), "/", epoch_of("2026-10-16"),
           created_by=f"COPY --from=build python3.11 {PY_V2} /usr")

    def service(prefix: str, base: str, py: str, files: dict[str, str], epoch: int,
                probe: bool) -> list[str]:
        req = files["requirements.txt"]
        whl = fetch_wheels(wheels_for(req, arch.wheels), wheels, arch.wheel_platform)
        b.copy(f"{prefix}-req", source_stager({"requirements.txt": req}, False), "/app", epoch,
               created_by="COPY requirements.txt /app/")
        b.copy(f"{prefix}-deps", venv_stager(whl, epoch), "/app", epoch,
               created_by="RUN python -m venv /app/.venv && pip install --no-deps "
                          "-r requirements.txt")
        src = {k: v for k, v in files.items() if k != "requirements.txt"}
        b.copy(f"{prefix}-src", source_stager(src, probe, arch.cc), "/app", epoch,
               created_by="COPY . /app/" + (f" && {arch.cc} -O2 -s probe/healthprobe.c"
                                            if probe else ""))
        return [base, py, f"{prefix}-req", f"{prefix}-deps", f"{prefix}-src"]

    env = ["PATH=/app/.venv/bin:/usr/bin:/bin", "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"]
    a1 = read_app("svcA")
    a2 = apply_edits(a1, SVC_A_V2_EDITS)
    a2["requirements.txt"] = bump_requirement(a2["requirements.txt"], *SVC_A_V2_BUMP)
    bsrc = read_app("svcB")
    a1[PROBE] = bsrc[PROBE]
    a2[PROBE] = bsrc[PROBE]
    a1b2 = apply_edits(a1, PROBE_V2_EDITS)
    cmd_a = ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:application"]
    cmd_b = ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "9000", "--loop", "uvloop"]
    specs = (
        ("svcA-v1", "svcA-v1", "base-v1", "py-v1", a1, "2026-09-10", True, cmd_a),
        ("svcB-v1", "svcB-v1", "base-v1", "py-v1", bsrc, "2026-09-12", True, cmd_b),
        ("svcA-v2", "svcA-v2", "base-v1", "py-v1", a2, "2026-09-20", True, cmd_a),
        ("svcA-v1-base2", "svcA-v1-b2", "base-v2", "py-v2", a1b2, "2026-10-17", True,
         ["tini", "--", *cmd_a]),
    )
    for name, prefix, base, py, files, day, pr, cmd in specs:
        layers = service(prefix, base, py, files, epoch_of(day), pr)
        b.image(Image(name, layers, epoch_of(day), env, cmd, "/app", ["8000/tcp"]))
    b.write_manifest([
        {"id": "S0", "old": None, "new": "svcA-v1", "desc": "first image: device has nothing"},
        {"id": "S1", "old": "svcA-v1", "new": "svcB-v1",
         "desc": "new FastAPI service B (+ C probe) on the distroless base + CPython "
                 "the device has"},
        {"id": "S2", "old": "svcA-v1", "new": "svcA-v2",
         "desc": "app update: 4 source files edited + werkzeug 3.0.3->3.0.4 (venv layer rebuilt)"},
        {"id": "S3", "old": "svcA-v1", "new": "svcA-v1-base2",
         "desc": "base update: libssl3/zlib/xz/zstd/expat/tzdata/ca-certificates point updates, "
                 "+tini +libcap2, python3.11 deb12u8->deb12u9; app layers rebuilt (new mtimes), "
                 "C probe recompiled from its next source version"},
    ])


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description="build benchmark corpus 2")
    parser.add_argument("--out", required=True, type=Path,
                        help="data directory: the corpus is written to OUT/corpus2/")
    parser.add_argument("--arch", choices=sorted(ARCHES), default="amd64",
                        help="arm64: the same corpus for arm64 devices, in OUT/corpus2-arm64/")
    args = parser.parse_args(argv)
    try:
        build(args.out, ARCHES[args.arch])
    except InputError as exc:
        print(f"corpus2: input failed: {exc}", file=sys.stderr)
        return 2
    print("corpus-done 0", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
