#!/usr/bin/env bash
# Real frameworks on tokioloop: installs tests/integration/requirements.txt
# into the given interpreter's environment, starts PostgreSQL and Redis
# (scripts/services.sh, stopped again on exit) and runs tests/integration.
#
#   bash scripts/integration.sh [PYTHON]   # default: .venv/bin/python
#
# PYTHON must already have tokioloop installed (scripts/env.sh's venv_for
# does that); this script does not build it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${1:-$ROOT/.venv/bin/python}"
cd "$ROOT"

"$PY" -c "import tokioloop" || { echo "tokioloop is not installed for $PY" >&2; exit 1; }
"$PY" -m pip install -q --disable-pip-version-check -r tests/integration/requirements.txt

services_env="$(bash scripts/services.sh start)"
eval "$services_env"
trap 'bash "$ROOT/scripts/services.sh" stop "$TOKIOLOOP_SERVICES_DIR"' EXIT

# Within 10 minutes (it takes under one): a hang gets SIGABRT, whose
# faulthandler dump shows every thread's stack.
timeout --signal=ABRT --kill-after=30 600 \
    "$PY" -m pytest -q -p no:cacheprovider -o asyncio_default_fixture_loop_scope=function \
    tests/integration
