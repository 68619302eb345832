#!/usr/bin/env bash
# Install everything deltaport needs on Debian 12, idempotently:
# the system packages (registry, skopeo, podman, PostgreSQL, ...) and a virtualenv
# in .venv with deltaport and its pinned dependencies.
# usage: scripts/setup.sh            (as root, or with sudo available)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

APT_PACKAGES=(docker-registry skopeo umoci podman buildah runc uidmap slirp4netns
  fuse-overlayfs zstd xdelta3 bsdiff postgresql mosquitto jq busybox-static python3-venv
  python3-pip rsync debootstrap nginx chromium chromium-driver)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing system packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check pip==25.3 2>/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[all,dev]" 2>&1 \
  | grep -v "^WARNING: Location" || true
.venv/bin/deltaport --help >/dev/null
echo "setup: ready (.venv/bin/deltaport)" >&2
