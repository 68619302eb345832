#!/usr/bin/env bash
# Set everything up, then run deltaport's end-to-end demo.
# usage: scripts/demo.sh [--keep DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
exec .venv/bin/deltaport demo "$@"
