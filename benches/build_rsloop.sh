#!/usr/bin/env bash
# Builds rsloop (a bench-only rival: Rust, io_uring) from its sdist and
# installs it into a virtualenv, for `--loops ...,rsloop` in benches/.
#
# Its PyPI wheels need glibc 2.39 (this machine has 2.36), and its sdist
# pins a nightly toolchain for one unstable library feature
# (`allocator_api`). So the build uses the installed stable toolchain with
# RUSTC_BOOTSTRAP=1 and the feature gate written into its lib.rs.
#
# Usage: bash benches/build_rsloop.sh [PYTHON] (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(realpath -s "${1:-.venv/bin/python}")"
VERSION="${RSLOOP_VERSION:-0.1.66}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

url="$("$PY" - "$VERSION" <<'PYEOF'
import json, sys, urllib.parse, urllib.request
index = "https://pypi.org/pypi/rsloop/json"
with urllib.request.urlopen(index) as reply:
    files = json.load(reply)["releases"][sys.argv[1]]
sdist = next(f["url"] for f in files if f["packagetype"] == "sdist")
print(urllib.parse.urljoin(index, sdist))
PYEOF
)"
curl -sfL "$url" | tar xz -C "$work"
src="$work/rsloop-$VERSION"
rm -f "$src/rust-toolchain.toml"
sed -i '1i #![feature(allocator_api)]' "$src/src/lib.rs"
(cd "$src" && RUSTC_BOOTSTRAP=1 "$(dirname "$PY")/maturin" build --release -q -i "$PY" -o "$work/wheel")
"$PY" -m pip install -q --force-reinstall --no-deps "$work"/wheel/*.whl
"$PY" -c "import rsloop; print('rsloop', rsloop.__version__)"
