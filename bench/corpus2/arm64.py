"""Corpus 2 for arm64 devices: the same packages and wheels, their arm64/aarch64 builds.

Nothing here runs arm64 code. The Debian packages are fetched by URL from deb.debian.org
(no ``dpkg --add-architecture``): the same names and versions as the amd64 corpus, the pool
path of the amd64 file with ``_amd64.deb`` replaced by ``_arm64.deb`` (``_all.deb`` files are
shared), each pinned by sha256. ``pool/updates/...`` paths are on the security archive. The
aarch64 wheels are PyPI's ``manylinux_2_17_aarch64`` builds of the same versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from collections.abc import Sequence
from pathlib import Path

DEBIAN = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
PLATFORM = "manylinux2014_aarch64"
CC = "aarch64-linux-gnu-gcc"


class FetchError(Exception):
    """A pinned arm64 package could not be fetched or did not match its sha256."""


# name=version -> (pool path, sha256)
DEBS: dict[str, tuple[str, str]] = {
    "base-files=12.4+deb12u15":
        ("pool/main/b/base-files/base-files_12.4+deb12u15_arm64.deb",
         "b1272fbdc197f7d5bd22c05b741a03840f8bec66ca68c8d797f567ff2c99d42d"),
    "netbase=6.4":
        ("pool/main/n/netbase/netbase_6.4_all.deb",
         "29b23c48c0fe6f878e56c5ddc9f65d1c05d729360f3690a593a8c795031cd867"),
    "media-types=10.0.0":
        ("pool/main/m/media-types/media-types_10.0.0_all.deb",
         "aaa46dcb3b39948ae2e0fdb72cfcb2f48c0b59f19785a3da8045c05eb19955dd"),
    "libc6=2.36-9+deb12u14":
        ("pool/main/g/glibc/libc6_2.36-9+deb12u14_arm64.deb",
         "01f4330719fd4f65580e16ea5a0527f372fca750e8f588d26deaf09f2d3b1cf4"),
    "libgcc-s1=12.2.0-14+deb12u1":
        ("pool/main/g/gcc-12/libgcc-s1_12.2.0-14+deb12u1_arm64.deb",
         "576926b283613db80168ddf76380a3bd877602778cf0d226caa7bfbfa71eacf3"),
    "libstdc++6=12.2.0-14+deb12u1":
        ("pool/main/g/gcc-12/libstdc++6_12.2.0-14+deb12u1_arm64.deb",
         "26e138c677a985775331373828a6c286c551ff397cb735d00e2383cb273d1cb2"),
    "libcrypt1=1:4.4.33-2":
        ("pool/main/libx/libxcrypt/libcrypt1_4.4.33-2_arm64.deb",
         "eea0ad76ea5eb507127fea0c291622ea4ecdbb71c4b9a8ed9c76ae33fc1a0127"),
    "libffi8=3.4.4-1":
        ("pool/main/libf/libffi/libffi8_3.4.4-1_arm64.deb",
         "80b5c36177dc0e29d531c7eddbed3cc7355cb490e49f8cfa5959572d161f27b3"),
    "libbz2-1.0=1.0.8-5+b1":
        ("pool/main/b/bzip2/libbz2-1.0_1.0.8-5+b1_arm64.deb",
         "d3a96ece03326498b39ff093a76800dfcbcb1d4049d6ae6e9f6fa1aa7a590ad6"),
    "busybox-static=1:1.35.0-4+deb12u1+b1":
        ("pool/main/b/busybox/busybox-static_1.35.0-4+deb12u1+b1_arm64.deb",
         "732c9135564fc71337e0e05fb4da4d11e6c28c1834bce3e405e575afef2a52f5"),
    "libssl3=3.0.17-1~deb12u2":
        ("pool/main/o/openssl/libssl3_3.0.17-1~deb12u2_arm64.deb",
         "9b7acbd0384990d9f8046798b7f646bf71e60ce41b3dd52575bdb9aa50a67320"),
    "openssl=3.0.17-1~deb12u2":
        ("pool/main/o/openssl/openssl_3.0.17-1~deb12u2_arm64.deb",
         "6e86117c1f403c63200228912b614d644e7cd234fcbe8e3aa36763aded5e4f07"),
    "zlib1g=1:1.2.13.dfsg-1":
        ("pool/main/z/zlib/zlib1g_1.2.13.dfsg-1_arm64.deb",
         "52b8b8a145bbe1956bba82034f77022cbef0c3d0885c9e32d9817a7932fe1913"),
    "liblzma5=5.4.1-1+deb12u1":
        ("pool/main/x/xz-utils/liblzma5_5.4.1-1+deb12u1_arm64.deb",
         "647ce9d81e41c30071ce6ac0d3324579216a33aaa1d28971d6952315f6a95a75"),
    "libzstd1=1.5.4+dfsg2-5":
        ("pool/main/libz/libzstd/libzstd1_1.5.4+dfsg2-5_arm64.deb",
         "95e173c9538f96ede4fc275ec7863f395a97dd0ea62454be9bc914efa1b9be93"),
    "libexpat1=2.5.0-1+deb12u2":
        ("pool/main/e/expat/libexpat1_2.5.0-1+deb12u2_arm64.deb",
         "8dc1976735acf825e3a922d82f171e20feec7394da2b8c616091983e38706275"),
    "libuuid1=2.38.1-5+deb12u1":
        ("pool/updates/main/u/util-linux/libuuid1_2.38.1-5+deb12u1_arm64.deb",
         "7df6c380f636aefcb79b14ca5d894767834d0ca87db28d40a9c7eaf2acb0bd3c"),
    "tzdata=2025b-0+deb12u1":
        ("pool/main/t/tzdata/tzdata_2025b-0+deb12u1_all.deb",
         "a17042cb951b80d0c9462a73dec6ad31fc6adeae4ed92209601dc97d1019d7f2"),
    "ca-certificates=20230311+deb12u1":
        ("pool/main/c/ca-certificates/ca-certificates_20230311+deb12u1_all.deb",
         "0d5f444f594e48c1e16a41d8fc628a09b24c658916a1274025c2330f2a802bed"),
    "libssl3=3.0.22-1~deb12u2":
        ("pool/updates/main/o/openssl/libssl3_3.0.22-1~deb12u2_arm64.deb",
         "3d04ecd8d0f57fed50d205abaeedfcc84c1960073ea085719c00add44b0ccd7f"),
    "openssl=3.0.22-1~deb12u2":
        ("pool/updates/main/o/openssl/openssl_3.0.22-1~deb12u2_arm64.deb",
         "416af916dd59f08e996ec887acf3d267039169ef40ee4d38b44829b5ec3e92a4"),
    "zlib1g=1:1.2.13.dfsg-1+deb12u1":
        ("pool/updates/main/z/zlib/zlib1g_1.2.13.dfsg-1+deb12u1_arm64.deb",
         "61477d8059daf1765683a73099cc17941e1970acb520fd238646dedf99eb16f6"),
    "liblzma5=5.4.1-1+deb12u2":
        ("pool/updates/main/x/xz-utils/liblzma5_5.4.1-1+deb12u2_arm64.deb",
         "36358d245f246234721e6c1c2ee5d11a46c1c877023c63f7570df02cd79964f5"),
    "libzstd1=1.5.4+dfsg2-5+deb12u1":
        ("pool/updates/main/libz/libzstd/libzstd1_1.5.4+dfsg2-5+deb12u1_arm64.deb",
         "2032e10b4dd01ec97d157aa1f6474efd6320bb70c6a7cae003e1b8eba3b566f8"),
    "libexpat1=2.5.0-1+deb12u5":
        ("pool/updates/main/e/expat/libexpat1_2.5.0-1+deb12u5_arm64.deb",
         "4a733e7f636de4a4483e3e5d7b02dc8e788b115361a04dd58df89461ce2ae65a"),
    "libuuid1=2.38.1-5+deb12u3":
        ("pool/main/u/util-linux/libuuid1_2.38.1-5+deb12u3_arm64.deb",
         "3b2d19df0f3190108cf54228c4cfc822226c06d8f3615a5ab16a7dffb1f58aed"),
    "tzdata=2026f-0+deb12u1":
        ("pool/updates/main/t/tzdata/tzdata_2026f-0+deb12u1_all.deb",
         "3254eb870c8a949518214805aee5e4276af7699988ea8b9a3a583cd0f1eab31c"),
    "ca-certificates=20250419~deb12u2":
        ("pool/updates/main/c/ca-certificates/ca-certificates_20250419~deb12u2_all.deb",
         "b9f76b5271a7ac373fd5e7e1b5b826a71ddd702b42a0d104955ecb1acfffc94b"),
    "tini=0.19.0-1+b3":
        ("pool/main/t/tini/tini_0.19.0-1+b3_arm64.deb",
         "335dee1e36c0bf61f11c9fe9740012966a3183bd50405b73ed19477293c28f7f"),
    "libcap2=1:2.66-4+deb12u3+b1":
        ("pool/main/libc/libcap2/libcap2_2.66-4+deb12u3+b1_arm64.deb",
         "b3a21ae1cef9c2f3fa340007100fb0aa934ab6a4d8aed131660de9713db2bb6e"),
    "python3.11-minimal=3.11.2-6+deb12u8":
        ("pool/main/p/python3.11/python3.11-minimal_3.11.2-6+deb12u8_arm64.deb",
         "6a07dd571f1a15af2f855d64571766fe44b73a57cc3b5ca79502bc89156a5e12"),
    "libpython3.11-minimal=3.11.2-6+deb12u8":
        ("pool/main/p/python3.11/libpython3.11-minimal_3.11.2-6+deb12u8_arm64.deb",
         "c48bac178c0fc43a2bf8ace784c762b5ee83e2b981894a991dc3ccfd3ec7cd4b"),
    "libpython3.11-stdlib=3.11.2-6+deb12u8":
        ("pool/main/p/python3.11/libpython3.11-stdlib_3.11.2-6+deb12u8_arm64.deb",
         "e79876de55c6c2dca10d044b2fa69ccd863950ea01714220c1982d16008105f9"),
    "python3.11=3.11.2-6+deb12u8":
        ("pool/main/p/python3.11/python3.11_3.11.2-6+deb12u8_arm64.deb",
         "76b445c9428db92fb8f17a322a99e3e54b3f8d0eeac76d80d5d6fff95f5dd526"),
    "libsqlite3-0=3.40.1-2+deb12u2":
        ("pool/main/s/sqlite3/libsqlite3-0_3.40.1-2+deb12u2_arm64.deb",
         "a690f7f2aa6435bd1fd7cbbd2216acb9acbb8c48c9721f2c195766375439eb13"),
    "libncursesw6=6.4-4":
        ("pool/main/n/ncurses/libncursesw6_6.4-4_arm64.deb",
         "cf32cb6751718872c6def448b82211eec494f688e2f1a3e6c71bfdaf6b0722c5"),
    "libtinfo6=6.4-4":
        ("pool/main/n/ncurses/libtinfo6_6.4-4_arm64.deb",
         "baef0f6776f84c7eed4f1146d6e5774689567dad43216894d41da02e6608e4b3"),
    "libreadline8=8.2-1.3":
        ("pool/main/r/readline/libreadline8_8.2-1.3_arm64.deb",
         "f3b162b7c1e05430607e792ebdbfc417cbd1f1d32cf83664133ae63d811a72d2"),
    "readline-common=8.2-1.3":
        ("pool/main/r/readline/readline-common_8.2-1.3_all.deb",
         "69317523fe56429aa361545416ad339d138c1500e5a604856a80dd9074b4e35c"),
    "libdb5.3=5.3.28+dfsg2-1":
        ("pool/main/d/db5.3/libdb5.3_5.3.28+dfsg2-1_arm64.deb",
         "344367608d622298a3d916f4cee3dc3173286f3b21f8f497ab21e7178ba930f9"),
    "libgdbm6=1.23-3":
        ("pool/main/g/gdbm/libgdbm6_1.23-3_arm64.deb",
         "3c704feaf89c5f2709a76b84126ac8affe4ddff69dc0b91af0ca9910c7e75714"),
    "libnsl2=1.3.0-2":
        ("pool/main/libn/libnsl/libnsl2_1.3.0-2_arm64.deb",
         "8f9ba58b219779b43c4ccc78c79b0a23f721fc96323c202abb31e02f942104b3"),
    "libtirpc3=1.3.3+ds-1":
        ("pool/main/libt/libtirpc/libtirpc3_1.3.3+ds-1_arm64.deb",
         "deaf9ea54f74cab6690b4bc0b427f05cbe62cc073580d84f5f18a8d9e2ece401"),
    "libkrb5-3=1.20.1-2+deb12u5":
        ("pool/main/k/krb5/libkrb5-3_1.20.1-2+deb12u5_arm64.deb",
         "c3c7227f5db903a7a8b8936d47d1d79643edcda36365c4c992e1a96bcc2d4c7e"),
    "libgssapi-krb5-2=1.20.1-2+deb12u5":
        ("pool/main/k/krb5/libgssapi-krb5-2_1.20.1-2+deb12u5_arm64.deb",
         "a00678963f692a929312968f19b77a61a8fc0011690d7dc909a8a2c4810fc7b3"),
    "libk5crypto3=1.20.1-2+deb12u5":
        ("pool/main/k/krb5/libk5crypto3_1.20.1-2+deb12u5_arm64.deb",
         "8ae2c31cde0b3e6f80c573a495b0f90bf6d9efb4455d900728278bb54d9092e5"),
    "libkrb5support0=1.20.1-2+deb12u5":
        ("pool/main/k/krb5/libkrb5support0_1.20.1-2+deb12u5_arm64.deb",
         "3043fd4a54b945a1b503170749527f825dcfc7add2f8bf5abb4a329deeb48f4a"),
    "libcom-err2=1.47.0-2+b2":
        ("pool/main/e/e2fsprogs/libcom-err2_1.47.0-2+b2_arm64.deb",
         "36c15f933a965b50f4c9558d792d9556934c84e532703935d8ae7e69dd3fa863"),
    "libkeyutils1=1.6.3-2":
        ("pool/main/k/keyutils/libkeyutils1_1.6.3-2_arm64.deb",
         "aac46cb6faec4e737502b3c2290b7b02f8ba04e8accd5af7fd07934df0c867b1"),
    "python3.11-minimal=3.11.2-6+deb12u9":
        ("pool/updates/main/p/python3.11/python3.11-minimal_3.11.2-6+deb12u9_arm64.deb",
         "617855dbf3299e03873926c75d61feaf3d36924586aecc1951a0b965a95bc694"),
    "libpython3.11-minimal=3.11.2-6+deb12u9":
        ("pool/updates/main/p/python3.11/libpython3.11-minimal_3.11.2-6+deb12u9_arm64.deb",
         "dd9847d2f77c5a924b1d3dd953b81f161db9374c94d03b9216191925350928c3"),
    "libpython3.11-stdlib=3.11.2-6+deb12u9":
        ("pool/updates/main/p/python3.11/libpython3.11-stdlib_3.11.2-6+deb12u9_arm64.deb",
         "9937cbe3f647aa89a590fec647438ce02098c113d1c6f70e4cb1230c368d42a4"),
    "python3.11=3.11.2-6+deb12u9":
        ("pool/updates/main/p/python3.11/python3.11_3.11.2-6+deb12u9_arm64.deb",
         "f8d1726c2f5c61b42dbf7652cd9c01da23e55029e3c384a9f1802334fd964091"),
}

# the binary wheels; the py3-none-any ones are the amd64 corpus's own files
WHEELS: dict[str, str] = {
    "MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl":
        "6ec585f69cec0aa07d945b20805be741395e28ac1627333b1c5b0105962ffced",
    "SQLAlchemy-2.0.31-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl":
        "bd15026f77420eb2b324dcb93551ad9c5f22fab2c150c286ef1dc1160f110203",
    "greenlet-3.0.3-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl":
        "52f59dd9c96ad2fc0d5724107444f76eb20aaccb675bf825df6435acb7703559",
    "httptools-0.6.1-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl":
        "8b0bb634338334385351a1600a73e558ce619af390c2b38386206ac6a27fecfc",
    "orjson-3.10.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl":
        "1bef1050b1bdc9ea6c0d08468e3e61c9386723633b397e50b82fda37b3563d72",
    "pydantic_core-2.16.3-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl":
        "8d62da299c6ecb04df729e4b5c52dc0d53f4f8430b4492b93aa8de1f541c4aac",
    "uvloop-0.19.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl":
        "570fc0ed613883d8d30ee40397b79207eedd2624891692471808a95069a007c1",
}


class ConfigArch:
    """Stands in for ocibuild's ``json``: the image configs it dumps name ``arch``.

    ocibuild writes ``"architecture": "amd64"`` into every config; an arm64 image says
    ``arm64`` (variant ``v8``), as ``docker save`` of an arm64 image does."""

    def __init__(self, arch: str) -> None:
        self.arch = arch

    def __getattr__(self, name: str) -> object:
        return getattr(json, name)

    def dumps(self, obj: object, **kw: object) -> str:
        if isinstance(obj, dict) and "rootfs" in obj and obj.get("architecture") == "amd64":
            obj = {**obj, "architecture": self.arch, "variant": "v8"}
        return json.dumps(obj, **kw)  # type: ignore[arg-type]


def url_of(path: str) -> str:
    """The archive holding a pool path: security updates live under pool/updates."""
    return f"{SECURITY if path.startswith('pool/updates/') else DEBIAN}/{path}"


def fetch_debs(pins: Sequence[str], cache: Path) -> list[Path]:
    """The arm64 .debs for ``name=version`` pins, downloaded once into ``cache``, sha256 checked."""
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for pin in pins:
        if pin not in DEBS:
            raise FetchError(f"{pin}: no arm64 pin (pool path + sha256)")
        path, sha = DEBS[pin]
        dest = cache / Path(path).name
        if not dest.exists():
            _download(url_of(path), dest)
        got = _sha256(dest)
        if got != sha:
            raise FetchError(f"{dest.name}: sha256 {got}, pinned {sha}")
        out.append(dest)
    return out


def _download(url: str, dest: Path) -> None:
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, part.open("wb") as f:
            for block in iter(lambda: r.read(1 << 20), b""):
                f.write(block)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise FetchError(f"download {url} failed: {exc}") from exc
    os.replace(part, dest)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
