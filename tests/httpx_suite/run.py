"""HTTPX's own test suite on tokioloop, compared with stock asyncio.

HTTPX's async tests (its AsyncClient over httpcore's anyio backend: TCP
streams from anyio's `connect_tcp`, that is `loop.create_connection`;
read, write, connect and pool timeouts; cancellation) run under anyio's
pytest plugin, whose asyncio backend makes each test's loop with
`asyncio.Runner` and no loop factory (anyio passes one only for
`use_uvloop`), that is through the event loop policy. Their server is a
uvicorn in a thread (the conftest's session-scoped `server` fixture), run
with `asyncio_run(..., loop_factory=...)` from uvicorn's `loop` setting:
the conftest's "asyncio" names `asyncio.SelectorEventLoop`, which the
policy would not reach, so it is edited to "asyncio:new_event_loop"
(uvicorn imports that string as the factory itself): the server's loop
comes from the policy too, and in the tokioloop session both ends of
every loopback connection are tokioloop's, one in the main thread, one in
the server's. tests/policy_suite.py runs the suite with tokioloop's policy
installed, then its failures on stock asyncio, and counts a test as failing
only when it fails on tokioloop alone and again when re-run alone. A check
test asserts each session's loop in an anyio test (which also makes a
request to the server) and the server's loop (which the conftest, edited,
records).

    python tests/httpx_suite/run.py [pytest args...]

The tests (and HTTPX's pytest settings, its pyproject.toml, with
`filterwarnings = error`) are those of the installed httpx's version,
fetched as tests/sdist_suite.py describes. Its test dependencies must be
installed: trio (imported by tests/concurrency.py; anyio's plugin then
offers a trio backend too, and only the asyncio one runs: `-k "not
trio"`), trustme, uvicorn, chardet 5 (5.2.0 here: chardet 7 guesses
other encodings for its samples, on either loop), zstandard, h2,
socksio, brotli, click, rich and pygments. pytest-asyncio (installed for
tests/integration) is turned off: anyio's plugin runs the async tests,
each with a limit (pytest-timeout, 60 s). Those settings are edits to its
pyproject.toml, so that the re-runs alone have them too. About 1,290 tests
a session, which takes about 10 s on 2 cores.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy_suite  # tests/ is not a package: imported by path
import sdist_suite

CONFTEST_EDITS = [
    # The server's loop from the policy (see above), over h11: HTTPX's
    # test requirements install uvicorn without httptools, which picks h11;
    # httptools is installed here (tests/uvicorn_suite), and its lower-case
    # "transfer-encoding" fails HTTPX's CLI tests, which expect h11's.
    (
        'Config(app=app, lifespan="off", loop="asyncio")',
        'Config(app=app, lifespan="off", loop="asyncio:new_event_loop", http="h11")',
    ),
    # The server's running loop, kept for the check test.
    (
        "        loop = asyncio.get_event_loop()\n",
        "        loop = self.loop = asyncio.get_event_loop()\n",
    ),
]

# HTTPX's pytest settings, for the first run and the re-runs alike.
PYPROJECT_EDITS = [
    # Off: pytest-asyncio (installed for tests/integration): anyio's plugin
    # runs the async tests. On: pytest-timeout's limit per test.
    ('addopts = "-rxXs"\n', 'addopts = "-rxXs -p no:asyncio"\ntimeout = 60\n'),
    # click 8.5 (installed) deprecates CliRunner.isolated_filesystem, which HTTPX's CLI
    # tests use: their warnings are errors under its settings.
    (
        'filterwarnings = [\n  "error",\n',
        'filterwarnings = [\n  "error",\n  "ignore:\'isolated_filesystem\' is deprecated:DeprecationWarning",\n',
    ),
]

LOOP_CHECK = f"""\
import asyncio
import os

import httpx
import pytest

EXPECTED = os.environ["{policy_suite.VAR}"]


def kind(loop):
    return type(loop).__module__.split(".")[0]


@pytest.mark.anyio
async def test_anyio_test(server):
    assert kind(asyncio.get_running_loop()) == EXPECTED
    async with httpx.AsyncClient() as client:
        response = await client.get(server.url)
    assert response.text == "Hello, world!"


def test_server(server):
    assert kind(server.loop) == EXPECTED
"""
CHECK = "tests.test_zz_tokioloop::"

# Not run, on either loop.
DESELECT = [
    # pytest 9's caplog also captures loggers that do not propagate, so the
    # server's uvicorn.access lines join the httpx ones these expect alone.
    "tests/test_utils.py::test_logging_request",
    "tests/test_utils.py::test_logging_redirect_chain",
]
# What the whole run selects; the settings that the re-runs of single
# tests need too are in PYPROJECT_EDITS.
ARGS = [
    "--tb=short",
    "-rN",
    "-k",
    "not trio",
    # Marked by HTTPX as needing the network (a proxy, an unroutable
    # address, names to resolve): beyond loopback.
    "-m",
    "not network",
]


def main() -> int:
    suite = sdist_suite.fetch(
        "httpx",
        importlib.metadata.version("httpx"),
        keep=sdist_suite.tests_and_settings,
        edits={"tests/conftest.py": CONFTEST_EDITS, "pyproject.toml": PYPROJECT_EDITS},
        extra={**policy_suite.plugin_files(), "tests/test_zz_tokioloop.py": LOOP_CHECK},
    )
    args = [*ARGS, *(f"--deselect={t}" for t in DESELECT), "tests", *sys.argv[1:]]
    stock, ours = policy_suite.run(suite, args, CHECK)
    return policy_suite.report("httpx", stock, ours, check=CHECK)


if __name__ == "__main__":
    sys.exit(main())
