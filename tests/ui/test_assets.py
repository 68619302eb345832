"""The dashboard's files ship: every template and static file is package data, and the
vendored JavaScript matches its pinned sha256 (``scripts/vendor_ui_assets.py --check``)."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib

from tests.hub.conftest import ROOT

UI = ROOT / "src" / "deltaport" / "hub" / "ui"


def test_every_template_and_static_file_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["deltaport"]
    files = [p for d in ("templates", "static") for p in (UI / d).rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        relative = str(path.relative_to(ROOT / "src" / "deltaport"))
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_the_vendored_assets_match_their_pins() -> None:
    done = subprocess.run([sys.executable, "scripts/vendor_ui_assets.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "uPlot-1.6.32.iife.min.js: ok" in done.stdout and "htmx-2.0.4.min.js: ok" in done.stdout
    vendor = UI / "static" / "vendor"
    assert "MIT License" in (vendor / "uplot-1.6.32.LICENSE").read_text()
    assert (vendor / "htmx.org-2.0.4.LICENSE").read_text().strip()
