#!/usr/bin/env bash
# The whole test suite: Rust unit tests, lints, CPython's own asyncio suite on
# tokioloop, real frameworks (uvicorn, aiohttp, asyncpg against a local
# PostgreSQL, ...; scripts/integration.sh), other projects' own test suites
# compared with stock asyncio (anyio, uvicorn, websockets, Tornado,
# pytest-asyncio, Starlette, httpx, Hypercorn, aiofiles, aiosmtpd, AsyncSSH,
# aioquic, pyzmq, janus, asyncpg, aiohttp: tests/*_suite), uvloop's test suite in its asyncio mode
# (tests/uvloop_suite) and the pytest suite on every supported CPython. The
# default Python (3.11) runs last so its pytest summary closes the output.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

echo "== cargo test (pure-Rust parts)"
cargo test --quiet 2>&1 | grep "test result" | head -n 1

echo "== lints"
cargo fmt --check
cargo clippy --quiet --all-targets -- -D warnings
cargo fmt --check --manifest-path tests/rust_await/Cargo.toml
cargo clippy --quiet --manifest-path tests/rust_await/Cargo.toml -- -D warnings
PY311="$(venv_for 3.11)"
"$PY311" -m pip install -q --disable-pip-version-check ruff
"$ROOT/.venvs/py3.11/bin/ruff" check .

status=0
for version in 3.10 3.12 3.13 3.11; do
    echo "== CPython $version's own asyncio test suite on tokioloop"
    PY="$(venv_for "$version")" || { status=1; continue; }
    # A failing module is re-run once, alone, before it counts (a loaded
    # 2-core CI box can time out a subprocess test); flakes are listed.
    "$PY" tests/cpython/run.py --loop tokioloop -j 2 --retries 1 --total-timeout 600 \
        | sed 's/^\([0-9]* passed, [0-9]* failed\)$/cpython-suite: \1/' || status=1
done

echo "== real frameworks on tokioloop (tests/integration, CPython 3.11)"
bash scripts/integration.sh "$PY311" || status=1

echo "== anyio's own test suite on tokioloop against stock asyncio (CPython 3.11)"
# anyio itself comes with tests/integration; these are its test dependencies.
"$PY311" -m pip install -q --disable-pip-version-check hypothesis pytest-mock truststore psutil
"$PY311" tests/anyio_suite/run.py || status=1

echo "== uvicorn's own test suite on tokioloop (CPython 3.11)"
# uvicorn itself comes with tests/integration; these are its test dependencies.
"$PY311" -m pip install -q --disable-pip-version-check pytest-mock trustme cryptography \
    a2wsgi wsproto httpx2 zttp
"$PY311" tests/uvicorn_suite/run.py || status=1

echo "== websockets' own asyncio tests on tokioloop against stock asyncio (CPython 3.11)"
# The tests and the library they test come from Debian's source package
# (tests/websockets_suite/run.py says why); werkzeug is their one dependency.
"$PY311" -m pip install -q --disable-pip-version-check werkzeug
"$PY311" tests/websockets_suite/run.py || status=1

echo "== Tornado's own test suite on tokioloop against stock asyncio (CPython 3.11)"
"$PY311" -m pip install -q --disable-pip-version-check "tornado==6.6.1"
"$PY311" tests/tornado_suite/run.py || status=1

echo "== pytest-asyncio's own test suite on tokioloop against stock asyncio (CPython 3.11)"
# pytest-asyncio comes with tests/integration, hypothesis with anyio's line.
"$PY311" tests/pytest_asyncio_suite/run.py || status=1

echo "== Starlette's and httpx's own test suites on tokioloop against stock asyncio (CPython 3.11)"
# Their test dependencies (trio only because their test code imports it:
# the trio variants are not run); chardet 5, whose guesses httpx's tests
# expect; click, rich and pygments for httpx's command line.
"$PY311" -m pip install -q --disable-pip-version-check "starlette==1.10.0" "httpx==0.29.0" \
    jinja2 itsdangerous python-multipart pyyaml opentelemetry-api opentelemetry-sdk \
    importlib-metadata httpx2 blockbuster trio "chardet==5.2.0" zstandard h2 socksio brotli \
    click rich pygments
"$PY311" tests/starlette_suite/run.py || status=1
"$PY311" tests/httpx_suite/run.py || status=1

echo "== Hypercorn's and aiofiles' own test suites on tokioloop against stock asyncio (CPython 3.11)"
# Their test dependencies: pytest-asyncio runs both suites' async tests;
# trio and pytest-trio because Hypercorn's test modules import trio and its
# --strict-markers wants the `trio` marker (the trio tests are not run);
# httpx is imported by its trio end-to-end module.
"$PY311" -m pip install -q --disable-pip-version-check "hypercorn==0.18.0" "aiofiles==25.1.0" \
    pytest-asyncio trio pytest-trio httpx
"$PY311" tests/hypercorn_suite/run.py || status=1
"$PY311" tests/aiofiles_suite/run.py || status=1

echo "== aiosmtpd's own test suite on tokioloop against stock asyncio (CPython 3.11)"
# setuptools: its tests import pkg_resources.
"$PY311" -m pip install -q --disable-pip-version-check "aiosmtpd==1.4.6" pytest-mock packaging \
    setuptools
"$PY311" tests/aiosmtpd_suite/run.py || status=1

echo "== AsyncSSH's own test suite on tokioloop against stock asyncio (CPython 3.11)"
# Its test dependencies. Tests that need OpenSSH's tools (ssh-agent,
# ssh-keygen) skip or fail alike on both loops where they are missing.
"$PY311" -m pip install -q --disable-pip-version-check "asyncssh==2.24.1" bcrypt pyOpenSSL \
    fido2 aiofiles ifaddr
"$PY311" tests/asyncssh_suite/run.py || status=1

echo "== aioquic's own test suite on tokioloop against stock asyncio (CPython 3.11)"
"$PY311" -m pip install -q --disable-pip-version-check "aioquic==1.7.2"
"$PY311" tests/aioquic_suite/run.py || status=1

echo "== pyzmq's own asyncio/Tornado tests and janus' suite on tokioloop against stock asyncio (CPython 3.11)"
# pytest-asyncio comes with tests/integration; tornado for pyzmq's
# Tornado-loop tests. The pyzmq runner wants exactly the version whose
# sdist it pins.
"$PY311" -m pip install -q --disable-pip-version-check "pyzmq==27.3.0" "tornado==6.6.1" \
    "janus==2.0.0"
"$PY311" tests/pyzmq_suite/run.py || status=1
"$PY311" tests/janus_suite/run.py || status=1

echo "== asyncpg's own test suite on tokioloop against stock asyncio (CPython 3.11)"
# Against the PostgreSQL that scripts/services.sh starts (and stops).
"$PY311" -m pip install -q --disable-pip-version-check "asyncpg==0.32.0" distro
(
    eval "$(bash scripts/services.sh start)"
    trap 'bash scripts/services.sh stop "$TOKIOLOOP_SERVICES_DIR"' EXIT
    "$PY311" tests/asyncpg_suite/run.py
) || status=1

echo "== aiohttp's own test suite on tokioloop against stock asyncio (CPython 3.11)"
# Its test dependencies. Last of the 3.11 suites: aiodns makes pycares
# aiohttp's default resolver in this venv.
"$PY311" -m pip install -q --disable-pip-version-check "aiohttp==3.14.5" blockbuster \
    freezegun isal zlib-ng proxy.py pytest-codspeed aiodns brotli backports.zstd gunicorn \
    pytest-mock trustme
"$PY311" tests/aiohttp_suite/run.py || status=1

for version in 3.10 3.12 3.13 3.11; do
    echo "== uvloop's own test suite, asyncio mode, on tokioloop (CPython $version)"
    PY="$(venv_for "$version")" || { status=1; continue; }
    # The uvloop wheel is the suite's test base only (tests/uvloop_suite/run.py).
    "$PY" -m pip install -q --disable-pip-version-check "uvloop==0.23.0" psutil pyOpenSSL
    "$PY" tests/uvloop_suite/run.py || status=1
done

for version in 3.10 3.12 3.13 3.11; do
    echo "== pytest on CPython $version"
    if ! PY="$(venv_for "$version")"; then
        if [ "$version" = 3.11 ]; then exit 1; fi
        echo "skipping $version: interpreter not installed" >&2
        continue
    fi
    # pytest-asyncio (installed for tests/integration) is not used here:
    # off, so it does not warn about its unset loop scope.
    # A session that hangs gets SIGABRT (faulthandler prints every
    # thread's stack) after 15 minutes instead of running CI out of time.
    timeout --signal=ABRT --kill-after=30 900 \
        "$PY" -m pytest -q -p no:cacheprovider -p no:asyncio --ignore=tests/integration tests \
        || status=1
done
exit $status
