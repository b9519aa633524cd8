# Shared set-up for scripts/*.sh: find an interpreter, make its virtualenv,
# install the build and test tools, and build tokioloop into it.
# Sourced, not run. Everything it needs comes from PyPI and crates.io, so a
# fresh machine with Rust and the pyenv Pythons needs nothing else.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TERM_COLOR=never

# python_for 3.12 -> path of a CPython 3.12 interpreter, or empty.
python_for() {
    local want="$1" candidate
    for candidate in "$HOME"/.pyenv/versions/"$want".*/bin/python "$(command -v "python$want" || true)"; do
        if [ -x "$candidate" ] && "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$want'.split('.'))))" 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# venv_for 3.12 -> builds .venvs/py3.12 with tokioloop (and the test-only
# tests/rust_await) installed; prints its python.
venv_for() {
    local want="$1" base venv
    base="$(python_for "$want")" || { echo "no CPython $want found" >&2; return 1; }
    venv="$ROOT/.venvs/py$want"
    if [ ! -x "$venv/bin/python" ]; then
        "$base" -m venv "$venv" >&2
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        "maturin>=1.7,<2" "pytest>=8" "pytest-timeout>=2.3" "trustme>=1.1" >&2 || return 1
    (cd "$ROOT" && VIRTUAL_ENV="$venv" "$venv/bin/maturin" develop --release -q >&2) || return 1
    # A test-only Rust library that awaits on the loop (tests/test_rust_await.py).
    (cd "$ROOT/tests/rust_await" && VIRTUAL_ENV="$venv" "$venv/bin/maturin" develop --release -q >&2) \
        || return 1
    "$venv/bin/python" -c "import tokioloop" || return 1
    echo "$venv/bin/python"
}
