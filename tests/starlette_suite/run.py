"""Starlette's own test suite on tokioloop, compared with stock asyncio.

Starlette's async tests run under anyio's pytest plugin, whose asyncio
backend makes each test's loop with `asyncio.Runner` and no loop factory
(anyio passes one only for `use_uvloop`), that is through the event loop
policy; and most of its tests drive an app through `TestClient`, which
runs the app in an anyio blocking portal: a loop in a thread of its own,
made the same way. So tests/policy_suite.py runs the suite with tokioloop's
policy installed, then its failures on stock asyncio, and counts a test as
failing only when it fails on tokioloop alone and again when re-run alone.
What it exercises: a loop run from a thread other than the main one,
`call_soon_threadsafe` and `run_coroutine_threadsafe` (the portal),
`run_in_executor` (anyio's worker threads: sync endpoints, file responses,
WSGI), cancellation and task groups, and, with Starlette's `filterwarnings =
error`, any warning the loop lets out (a ResourceWarning or "coroutine was
never awaited" fails the test). A check test asserts each session's loop, in
an anyio test and in a `TestClient` request handler (the portal's loop).

    python tests/starlette_suite/run.py [pytest args...]

The tests (and Starlette's pytest settings, its pyproject.toml) are those
of the installed starlette's version, fetched as tests/sdist_suite.py
describes. Its test dependencies (its "full" extra and "dev" group) must
be installed: itsdangerous, jinja2, python-multipart, pyyaml,
opentelemetry-api and -sdk, importlib-metadata, httpx2, blockbuster (its
autouse fixture fails a test that blocks in the loop's thread), and trio,
which anyio's plugin then offers as a second backend: only the asyncio
one runs (`-k "not trio"`). pytest-asyncio (installed for
tests/integration) is turned off: anyio's plugin runs the async tests,
each with a limit (pytest-timeout, 60 s). Those settings are edits to its
pyproject.toml, so that the re-runs alone have them too. About 775 tests
a session, which takes about 10 s on 2 cores.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy_suite  # tests/ is not a package: imported by path
import sdist_suite

LOOP_CHECK = f"""\
import asyncio
import os

import pytest

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

EXPECTED = os.environ["{policy_suite.VAR}"]


def kind(loop):
    return type(loop).__module__.split(".")[0]


@pytest.mark.anyio
async def test_anyio_test():
    assert kind(asyncio.get_running_loop()) == EXPECTED


def test_test_client(test_client_factory):
    async def handler(request):
        return PlainTextResponse(kind(asyncio.get_running_loop()))

    app = Starlette(routes=[Route("/", handler)])
    with test_client_factory(app) as client:
        assert client.get("/").text == EXPECTED
"""
CHECK = "tests.test_zz_tokioloop::"

# Starlette's pytest settings, for the first run and the re-runs alike.
# Off: pytest-asyncio (installed for tests/integration): anyio's plugin runs
# the async tests. On: pytest-timeout's limit per test.
PYPROJECT_EDITS = [
    (
        'addopts = "-rXs --strict-config --strict-markers"\n',
        'addopts = "-rXs --strict-config --strict-markers -p no:asyncio"\ntimeout = 60\n',
    ),
]

# Not run: they fail on stock asyncio too, here.
DESELECT = []
if os.geteuid() == 0:
    # Expects 401 for a folder made unreadable with chmod; root reads it.
    DESELECT.append(
        "tests/test_staticfiles.py::test_staticfiles_with_invalid_dir_permissions_returns_401"
    )


def main() -> int:
    suite = sdist_suite.fetch(
        "starlette",
        importlib.metadata.version("starlette"),
        keep=sdist_suite.tests_and_settings,
        edits={"pyproject.toml": PYPROJECT_EDITS},
        extra={**policy_suite.plugin_files(), "tests/test_zz_tokioloop.py": LOOP_CHECK},
    )
    args = [
        "--tb=short",
        "-rN",
        "-k",
        "not trio",
        *(f"--deselect={t}" for t in DESELECT),
        "tests",
        *sys.argv[1:],
    ]
    stock, ours = policy_suite.run(suite, args, CHECK)
    return policy_suite.report("starlette", stock, ours, check=CHECK)


if __name__ == "__main__":
    sys.exit(main())
