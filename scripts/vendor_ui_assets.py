#!/usr/bin/env python3
"""Fetch the dashboard's JavaScript from the npm registry at pinned versions, check sha256.

Run from the repository root: ``python scripts/vendor_ui_assets.py``. Each asset is
taken out of its package tarball, checked against the pinned digest (of the file
itself) and written, with the package's licence, to src/deltaport/hub/ui/static/vendor.
Nothing here runs when the hub does: the files are committed (no CDN, no node).
With ``--check`` it only verifies the committed files against the pins.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEST = Path("src/deltaport/hub/ui/static/vendor")
TARBALL_MAX = 20 * 1024 * 1024  # bytes of one package tarball


@dataclass(frozen=True)
class Asset:
    package: str
    version: str
    member: str  # path inside the tarball
    name: str  # file name under DEST
    sha256: str  # of the file itself
    licence_member: str = "package/LICENSE"


ASSETS = (
    Asset("htmx.org", "2.0.4", "package/dist/htmx.min.js", "htmx-2.0.4.min.js",
          "e209dda5c8235479f3166defc7750e1dbcd5a5c1808b7792fc2e6733768fb447"),
    Asset("uplot", "1.6.32", "package/dist/uPlot.iife.min.js", "uPlot-1.6.32.iife.min.js",
          "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f"),
    Asset("uplot", "1.6.32", "package/dist/uPlot.min.css", "uPlot-1.6.32.min.css",
          "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04"),
)


def tarball_url(asset: Asset) -> str:
    base = asset.package.rsplit("/", 1)[-1]
    return f"https://registry.npmjs.org/{asset.package}/-/{base}-{asset.version}.tgz"


def fetch(asset: Asset) -> tuple[bytes, bytes]:
    with urllib.request.urlopen(tarball_url(asset), timeout=60) as resp:
        data = resp.read(TARBALL_MAX + 1)
    if len(data) > TARBALL_MAX:
        raise SystemExit(f"{asset.package}: tarball larger than {TARBALL_MAX} bytes")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        body = tar.extractfile(asset.member)
        lic = tar.extractfile(asset.licence_member)
        if body is None or lic is None:
            raise SystemExit(f"{asset.package}: {asset.member} or its licence is missing")
        return body.read(), lic.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only verify the committed files")
    args = parser.parse_args()
    bad = 0
    for asset in ASSETS:
        target = DEST / asset.name
        if args.check:
            body = target.read_bytes() if target.is_file() else b""
        else:
            body, licence = fetch(asset)
        digest = hashlib.sha256(body).hexdigest()
        if digest != asset.sha256:
            print(f"{asset.name}: sha256 {digest} is not the pinned {asset.sha256}",
                  file=sys.stderr)
            bad += 1
            continue
        if not args.check:
            DEST.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
            (DEST / f"{asset.package}-{asset.version}.LICENSE").write_bytes(licence)
        print(f"{asset.name}: ok ({len(body)} bytes, sha256 {digest})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
