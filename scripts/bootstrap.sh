#!/usr/bin/env bash
# Make this checkout runnable on a fresh Debian machine that has only Python:
# the Debian packages the tests and the demo need, a virtual environment in
# .venv, and the project installed into it (re-done only when pyproject changes).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bootstrap: %s\n' "$*" >&2; }

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root (or sudo) to run: $*"; return 1
  fi
}

# Debian packages: the broker, PostgreSQL 15 server binaries, venv support, Chromium.
# SMARTLOCKER_BOOTSTRAP=demo (scripts/demo.sh) needs only venv support: the demo
# falls back to its in-process Python broker and pip's PostgreSQL server.
need=()
if [ "${SMARTLOCKER_BOOTSTRAP:-}" != demo ]; then
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  command -v mosquitto_passwd >/dev/null || [ -x /usr/bin/mosquitto_passwd ] || need+=(mosquitto)
  [ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
fi
# The interpreter: SMARTLOCKER_PYTHON if set, else Debian's own /usr/bin/python3 when it is
# 3.11 or newer, else the first python3 on PATH. Debian's links libpython statically; a
# --enable-shared build (pyenv's, for one) calls through the PLT and runs the benchmark's
# processes measurably slower (docs/benchmarks.md, "Which Python").
python=${SMARTLOCKER_PYTHON:-}
if [ -z "$python" ]; then
  python=python3
  if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=/usr/bin/python3
  fi
fi
command -v "$python" >/dev/null || { log "no Python interpreter at $python"; exit 1; }
"$python" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# The dashboard's browser tests: headless Chromium driven by Playwright.
if [ "${SMARTLOCKER_BOOTSTRAP:-}" != demo ]; then
  [ -x /usr/bin/chromium ] || need+=(chromium)
  [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
fi
if [ ${#need[@]} -gt 0 ]; then
  log "installing Debian packages: ${need[*]}"
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { log "Python 3.11 or newer is needed, found $("$python" --version)"; exit 1; }

# A .venv made from another interpreter is made again (its packages are per interpreter).
base=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')
if [ -x .venv/bin/python ] && [ "$(.venv/bin/python -c 'import os, sys; print(os.path.realpath(sys._base_executable))')" != "$base" ]; then
  log "re-creating .venv with $base"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $base"
  "$python" -m venv .venv
fi
stamp=.venv/.smartlocker-installed
want=$( (sha256sum pyproject.toml; echo "$base") | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing the project and its dev dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -e '.[dev]' >&2
  echo "$want" >"$stamp"
fi
