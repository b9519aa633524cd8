#!/usr/bin/env bash
# The main job: build tokioloop and run its built-in benchmark against stock
# asyncio (and uvloop/rloop, installed here for the comparison).
set -euo pipefail
source "$(dirname "$0")/env.sh"
PY="$(venv_for 3.11)"
"$PY" -m pip install -q --disable-pip-version-check uvloop rloop || echo "uvloop/rloop unavailable: comparing with asyncio only" >&2
exec "$PY" -m tokioloop "$@"
