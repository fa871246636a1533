#!/usr/bin/env bash
# The whole test suite, with everything it needs installed first.
# Usage: scripts/test.sh [pytest arguments]
# pytest runs in SMARTLOCKER_TEST_WORKERS (default 3) processes, a test file per worker.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
# TimescaleDB (Apache edition) is built from Debian's source package once, then cached.
SMARTLOCKER_TIMESCALEDB_PREFIX=$(scripts/build-timescaledb.sh)
export SMARTLOCKER_TIMESCALEDB_PREFIX

echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy (strict on the package)" >&2
.venv/bin/mypy
echo "== pytest" >&2
exec .venv/bin/python -m pytest -n "${SMARTLOCKER_TEST_WORKERS:-3}" --dist loadfile "$@"
