#!/usr/bin/env bash
# Set everything up, then run the whole test suite: lint, type checks, tests.
# usage: scripts/test.sh [pytest args...]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
echo "== ruff" >&2
.venv/bin/ruff check src tests bench
echo "== mypy" >&2
.venv/bin/mypy src tests
echo "== pytest" >&2
.venv/bin/python -m pytest -q --durations=15 "$@"   # the slowest tests, to keep the suite fast
