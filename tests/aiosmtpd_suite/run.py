"""aiosmtpd's own test suite on tokioloop, compared with stock asyncio.

aiosmtpd is an SMTP server on asyncio transports: plain TCP, TLS
(`create_server(ssl=...)`), STARTTLS (`loop.start_tls` on a live
connection), Unix sockets (`create_unix_server`), and a `Controller` that
runs the server's loop in a thread of its own, started and stopped from
the test's thread (`call_soon_threadsafe`, `run_coroutine_threadsafe`,
`run_until_complete`/`run_forever`/`close` off the main thread). Its tests
are synchronous: they talk to the server with smtplib from the test's
thread. Every loop comes from the event loop policy: a `Controller` makes
its loop with `asyncio.new_event_loop()` unless given one (no test gives
one that does not come from the policy too), aiosmtpd's conftest's
`temp_event_loop` fixture calls `asyncio.new_event_loop()`, and
`aiosmtpd.main`/`SMTP()` without a loop use `asyncio.get_event_loop()`.
So tests/policy_suite.py runs the suite with tokioloop's policy installed,
then its failures on stock asyncio, and counts a test as failing only when
it fails on tokioloop alone and again when re-run alone. A check test
asserts each session's loop: a running `Controller`'s, as seen from the test
and from inside it, and `temp_event_loop`'s.

    python tests/aiosmtpd_suite/run.py [pytest args...]

The tests (aiosmtpd/tests/ and aiosmtpd/qa/, inside the package) and
aiosmtpd's pytest settings (pytest.ini) come from the installed version's
sdist, fetched as tests/sdist_suite.py describes; the sdist's package, the
same as the installed one, comes first on sys.path. Needs aiosmtpd, its
test dependencies (pytest-mock, packaging, setuptools for pkg_resources)
and pytest-timeout. The settings keep aiosmtpd's `filterwarnings = error`
(a warning, or an exception ignored in a __del__, fails the test running
then, on either loop) and lose what needs packages not installed here
(pytest-cov) or is only noise (-v, --showlocals, --durations), and gain
pytest-timeout's limit per test. Nothing is deselected: no test needs more
than loopback, and the one that needs git (a version check against git's
master) skips itself. The whole suite runs, about 570 tests a session, in
about a minute each, mostly the tests' own sleeps and timeouts.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy_suite  # tests/ is not a package: imported by path
import sdist_suite

PYTEST_INI_EDITS = [
    # pytest-cov is not installed; -v, --showlocals and --durations: noise.
    ("    --cov=aiosmtpd/ --cov-report term\n", ""),
    ("    -v\n", ""),
    ("    --showlocals\n", ""),
    ("    --durations=10\n", ""),
    # pytest-asyncio (installed for tests/integration) off: aiosmtpd's
    # tests are synchronous, and it is no part of what is compared. Its
    # setting goes too (unknown, it would warn, and warnings are errors).
    ("addopts =\n", "addopts =\n    -p no:asyncio\n"),
    ("asyncio_mode = auto\n", ""),
    # pyproject.toml's markers, which pytest.ini (read instead) lacks: an
    # unknown marker warns, and warnings are errors.
    (
        "xfail_strict = true\n",
        "xfail_strict = true\nmarkers =\n    client_data\n    controller_data\n    handler_data\n",
    ),
    # pytest-timeout (installed): a limit per test, so that a hang fails
    # one test rather than the session.
    ("testpaths =", "timeout = 60\ntestpaths ="),
]

LOOP_CHECK = f"""\
import asyncio
import os

EXPECTED = os.environ["{policy_suite.VAR}"]


def kind(loop):
    return type(loop).__module__.split(".")[0]


async def running_loop():
    return asyncio.get_running_loop()


def test_controller_loop(plain_controller, client):
    loop = plain_controller.loop
    assert loop.is_running()
    assert kind(loop) == EXPECTED
    future = asyncio.run_coroutine_threadsafe(running_loop(), loop)
    assert future.result(timeout=10) is loop
    code, _ = client.ehlo("example.com")
    assert code == 250


def test_temp_event_loop(temp_event_loop):
    assert kind(temp_event_loop) == EXPECTED
    assert temp_event_loop.run_until_complete(running_loop()) is temp_event_loop
"""
CHECK = "aiosmtpd.tests.test_zz_tokioloop::"


def keep(path: str) -> bool:
    """The package (its tests inside) and its pytest settings."""
    return path.startswith("aiosmtpd/") or path == "pytest.ini"


def main() -> int:
    if importlib.util.find_spec("aiosmtpd") is None:
        print("aiosmtpd-suite needs aiosmtpd (pip install aiosmtpd pytest-mock)", file=sys.stderr)
        return 1
    suite = sdist_suite.fetch(
        "aiosmtpd",
        importlib.metadata.version("aiosmtpd"),
        keep=keep,
        edits={"pytest.ini": PYTEST_INI_EDITS},
        extra={
            **policy_suite.plugin_files(),
            "aiosmtpd/tests/test_zz_tokioloop.py": LOOP_CHECK,
        },
    )
    args = ["--tb=short", "-rN", *sys.argv[1:]]
    stock, ours = policy_suite.run(suite, args, CHECK)
    return policy_suite.report("aiosmtpd", stock, ours, check=CHECK)


if __name__ == "__main__":
    sys.exit(main())
