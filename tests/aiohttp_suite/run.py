"""aiohttp's own test suite on tokioloop, compared with stock asyncio.

aiohttp's tests get their loops from its pytest plugin
(aiohttp.pytest_plugin): its `loop` fixture makes one with the loop factory
that --aiohttp-loop names, "pyloop" by default, which is
`asyncio.new_event_loop`, and async tests that do not use `loop` run on a
loop from `asyncio.new_event_loop()` too: every test's loop comes from the
event loop policy. So tests/policy_suite.py runs the suite with tokioloop's
policy installed (its test ids are the same in both, "[pyloop]" included),
then its failures on stock asyncio, and counts a test as failing only when
it fails on tokioloop alone and again when re-run alone. A check test
asserts each session's loop, for tests with and without the `loop` fixture.

    python tests/aiohttp_suite/run.py [pytest args...]

The tests (and aiohttp's pytest settings, its pytest.ini) are those of the
installed aiohttp's version, fetched as tests/sdist_suite.py describes; the
settings lose what needs packages not installed here (pytest-xdist,
pytest-cov, coverage). aiohttp's test dependencies must be installed (see
scripts/test.sh); the Autobahn tests (Docker) and those aiohttp's settings
leave out by default (dev mode, "internal") are not run. A test has
aiohttp's own time limit (pytest-timeout, 120 s, in its pytest.ini, so the
re-runs have it too). The whole suite runs, about 5,700 tests a session,
under a minute and a half each on 2 cores, thanks to one more setting: aiohttp's `loop` fixture runs a full garbage
collection after each test (so that a leaked transport's ResourceWarning
fails the test that leaked it); a plugin added here does that after every
test and then freezes what survived (`gc.freeze()`), so that these
collections stay cheap as the session's objects pile up (without it, over
half an hour).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy_suite  # tests/ is not a package: imported by path
import sdist_suite

GC_PLUGIN = "tokioloop_gc_freeze"
GC_PLUGIN_TEXT = '''\
"""A full garbage collection after each test, then what survived it frozen
(written here by tokioloop's tests/aiohttp_suite/run.py)."""

import gc

import pytest


def pytest_collection_finish(session):
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def collect_then_freeze():
    """Set up before, so torn down after, the test's other fixtures: what
    the test left is collected while an unraisable exception (a
    ResourceWarning) still counts against it, and what survives is left out
    of later collections."""
    yield
    gc.collect()
    gc.freeze()
'''

PYTEST_INI_EDITS = [
    # Off: pytest-asyncio (installed for tests/integration): aiohttp's own
    # plugin runs its async tests. On: the garbage collection plugin.
    ("addopts =\n", f"addopts =\n  -p no:asyncio\n  -p {GC_PLUGIN}\n"),
    # pytest-xdist, pytest-cov and coverage are not installed.
    ("  --numprocesses=auto\n", ""),
    ("  -p pytest_cov\n", ""),
    ("  --cov\n  --cov-config=.coveragerc.toml\n  --cov-context=test\n  --no-cov-on-fail\n", ""),
    ("  ignore:Couldn't import C tracer:coverage.exceptions.CoverageWarning\n", ""),
]

LOOP_CHECK = f"""\
import asyncio
import os

EXPECTED = os.environ["{policy_suite.VAR}"]


def kind(loop):
    return type(loop).__module__.split(".")[0]


async def test_loop_fixture(loop):
    assert asyncio.get_running_loop() is loop
    assert kind(loop) == EXPECTED


async def test_without_loop_fixture():
    assert kind(asyncio.get_running_loop()) == EXPECTED


async def test_aiohttp_client(aiohttp_client):
    from aiohttp import web

    async def handler(request):
        return web.Response(text=kind(asyncio.get_running_loop()))

    app = web.Application()
    app.router.add_get("/", handler)
    client = await aiohttp_client(app)
    async with client.get("/") as response:
        assert await response.text() == EXPECTED
"""
CHECK = "tests.test_zz_tokioloop::"

# Not run: they fail on stock asyncio too, here.
DESELECT = []
if os.geteuid() == 0:
    # Expect 403 for files made unreadable with chmod; root reads them.
    DESELECT += [
        "tests/test_web_urldispatcher.py::test_static_directory_without_read_permission",
        "tests/test_web_urldispatcher.py::test_static_file_without_read_permission",
    ]
AIOHTTP = Path(importlib.util.find_spec("aiohttp").origin).parent
if AIOHTTP.resolve() != AIOHTTP:
    # Compares aiohttp's folder with a static route's, which resolves
    # symlinks: fails when the venv is reached through one (.venv).
    DESELECT.append("tests/test_benchmarks_web_urldispatcher.py::test_resolve_static_root_route")


def keep(path: str) -> bool:
    """Its tests, its pytest settings, and the README.rst a sendfile test
    serves (as ../README.rst of tests/)."""
    return path.startswith("tests/") or path in ("pytest.ini", "README.rst")


def main() -> int:
    suite = sdist_suite.fetch(
        "aiohttp",
        importlib.metadata.version("aiohttp"),
        keep=keep,
        edits={"pytest.ini": PYTEST_INI_EDITS},
        extra={
            **policy_suite.plugin_files(),
            f"{GC_PLUGIN}.py": GC_PLUGIN_TEXT,
            "tests/test_zz_tokioloop.py": LOOP_CHECK,
        },
    )
    args = ["--tb=short", "-rN", *(f"--deselect={t}" for t in DESELECT), "tests", *sys.argv[1:]]
    stock, ours = policy_suite.run(suite, args, CHECK)
    return policy_suite.report("aiohttp", stock, ours, check=CHECK)


if __name__ == "__main__":
    sys.exit(main())
