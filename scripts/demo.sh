#!/usr/bin/env bash
# The whole system on this machine, with simulated couriers and recipients at work.
# Usage: scripts/demo.sh [smartlocker demo options]   (Ctrl-C stops everything)
set -euo pipefail
cd "$(dirname "$0")/.."

# Only Python is needed: without mosquitto the demo runs its in-process broker.
SMARTLOCKER_BOOTSTRAP=demo scripts/bootstrap.sh
exec .venv/bin/smartlocker demo "$@"
