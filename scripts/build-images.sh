#!/usr/bin/env bash
# Build deltaport's own container images from this checkout, without a Docker daemon:
#   localhost/deltaport-agent:TAG   the device side only (deltaport[agent])
#   localhost/deltaport-hub:TAG     the hub (deltaport[hub])
# on a Debian bookworm base made with debootstrap (no registry needed: the base is built
# from Debian packages and cached). Needs root (debootstrap, buildah) and the Debian and
# PyPI registries; podman/buildah read their usual config (CONTAINERS_CONF & co. apply).
#
# usage: scripts/build-images.sh [--tag TAG] [--only agent|hub] [--mirror URL]
#   cache: $DELTAPORT_IMAGE_CACHE (default ~/.cache/deltaport/images): the base rootfs
#   tarball and the downloaded wheels, reused while their inputs are unchanged.
# Prints the built image names, one a line, on stdout; progress goes to stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

TAG=""
ONLY=""
MIRROR="http://deb.debian.org/debian"
SUITE="bookworm"
BASE_PACKAGES="python3,python3-venv,ca-certificates,tzdata"
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --mirror) MIRROR="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-images: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$ONLY" in ""|agent|hub) ;; *) echo "build-images: --only takes agent or hub, not '$ONLY'" >&2; exit 2 ;; esac
for tool in debootstrap buildah podman; do
  command -v "$tool" >/dev/null || { echo "build-images: $tool is not installed (scripts/setup.sh installs it)" >&2; exit 12; }
done
[ "$(id -u)" -eq 0 ] || { echo "build-images: needs root (debootstrap and buildah)" >&2; exit 2; }

PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || { echo "build-images: no $PY: run scripts/setup.sh first" >&2; exit 12; }
VERSION="$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
TAG="${TAG:-$VERSION}"
CACHE="${DELTAPORT_IMAGE_CACHE:-$HOME/.cache/deltaport/images}"
mkdir -p "$CACHE"

# 1. The base: a minimal Debian with Python, made once per (suite, packages, mirror).
BASE_KEY="$(printf '%s\n' "$SUITE" "$BASE_PACKAGES" "$MIRROR" "trim-1" | sha256sum | cut -c1-16)"
BASE_TAR="$CACHE/base-$SUITE-$BASE_KEY.tar"
BASE_IMAGE="localhost/deltaport-base:$SUITE-$BASE_KEY"
if [ ! -s "$BASE_TAR" ]; then
  echo "build-images: making the $SUITE base with debootstrap ($BASE_PACKAGES)" >&2
  work="$(mktemp -d "$CACHE/base.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$work/rootfs" "$MIRROR" \
    > "$work/debootstrap.log" 2>&1 \
    || { echo "build-images: debootstrap failed; its log:" >&2; tail -20 "$work/debootstrap.log" >&2; exit 5; }
  # what a container does not need: package caches, docs, man pages, other locales
  rm -rf "$work/rootfs"/var/cache/apt/* "$work/rootfs"/var/lib/apt/lists/* \
    "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/* "$work/rootfs"/usr/share/info/* \
    "$work/rootfs"/var/log/*.log "$work/rootfs"/var/cache/debconf/*-old
  find "$work/rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} + 2>/dev/null || true
  tar -C "$work/rootfs" --numeric-owner -cf "$work/base.tar" .
  mv "$work/base.tar" "$BASE_TAR"   # atomic: a cut build leaves no half tarball behind
  rm -rf "$work"
  trap - EXIT
fi
if ! podman image exists "$BASE_IMAGE"; then
  echo "build-images: importing the base as $BASE_IMAGE" >&2
  podman import --quiet --change 'ENV LANG=C.UTF-8' --change "LABEL io.deltaport.base-key=$BASE_KEY" \
    "$BASE_TAR" "$BASE_IMAGE" >/dev/null
fi

# 2. The wheels: this checkout's wheel and its pinned dependencies, binary only.
CONTEXT="$(mktemp -d "${TMPDIR:-/tmp}/deltaport-images.XXXXXX")"
trap 'rm -rf "$CONTEXT"' EXIT
mkdir -p "$CONTEXT/wheels"
echo "build-images: building the deltaport $VERSION wheel" >&2
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$CONTEXT/wheels" "$ROOT"
WHEEL="$(ls "$CONTEXT"/wheels/deltaport-*.whl)"
echo "build-images: fetching the pinned dependencies" >&2
mkdir -p "$CACHE/wheels"
rm -f "$CACHE"/wheels/deltaport-*.whl   # else pip reuses a stale one and its old dependency list
"$PY" -m pip download -q --disable-pip-version-check --only-binary :all: -d "$CACHE/wheels" \
  "deltaport[hub] @ file://$WHEEL" >&2
find "$CACHE/wheels" -name '*.whl' ! -name 'deltaport-*' -exec cp {} "$CONTEXT/wheels/" \;

# 3. The images.
build() {  # build ROLE
  local role="$1" image="localhost/deltaport-$1:$TAG"
  echo "build-images: building $image" >&2
  buildah bud --quiet --isolation chroot --layers=false \
    --build-arg "BASE=$BASE_IMAGE" --build-arg "VERSION=$VERSION" \
    -f "$ROOT/containers/$role/Containerfile" -t "$image" "$CONTEXT" >/dev/null
  echo "$image"
}
[ "$ONLY" = "hub" ] || build agent
[ "$ONLY" = "agent" ] || build hub
