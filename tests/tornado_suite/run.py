"""Tornado's own test suite on tokioloop, compared with stock asyncio.

Tornado runs on asyncio through `tornado.platform.asyncio`: its IOLoop
watches sockets with `add_reader`/`add_writer`/`remove_reader`, schedules
with `call_at`/`call_later`, wakes from other threads with
`call_soon_threadsafe` and runs blocking work (the default resolver, WSGI
apps) with `run_in_executor`: a part of the loop's API that the other
suites exercise less than transports and streams. Every test case's loop
comes from `asyncio.new_event_loop()` (`AsyncTestCase.get_new_ioloop` makes
an `AsyncIOLoop`, which asks for one), that is from the event loop policy;
so tests/policy_suite.py runs the suite with tokioloop's policy installed,
then its failures on stock asyncio, and counts a test as failing only when
it fails on tokioloop alone. A check test asserts each session's loop as
Tornado's IOLoop sees it (`IOLoop.current().asyncio_loop` in an
`AsyncTestCase`, and the loop running a `gen_test` coroutine).

    python tests/tornado_suite/run.py [pytest args...]

The tests: Tornado ships them in its package (tornado/test/). The installed
tornado (pip install tornado; 6.6.1 when this was written) is copied whole
into .cache/tornado-tests/tornado-<version>/, C extension included, so that
the tests run against exactly what is installed, from a folder of their
own where this runner adds its pytest settings, a conftest and the check
test; the copy comes first on PYTHONPATH (identical to the installed one).

pytest, not Tornado's runner (`python -m tornado.test.runtests`): they are
plain unittest classes, which pytest runs as they are, and pytest gives
what tests/sdist_suite.py needs (JUnit outcomes, re-running one test alone,
pytest-timeout's limit per test). The conftest does what runtests does
that the tests rely on: it silences the tornado.access log (tests that
assert no unexpected logs would fail on its INFO lines) and leaves out the
abstract base test classes (which runtests hides rather than report as
skips). runtests' strictness about warnings and stray logs is left out:
those pass or fail a whole run, not a test.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy_suite  # tests/ is not a package: imported by path
import sdist_suite

CONFTEST = """\
import logging

import pytest

# runtests.py's setting: request logs would trip the tests' log checks.
logging.getLogger("tornado.access").setLevel(logging.CRITICAL)


def abstract(item):
    # tornado.test.util.abstract_base_test's wrapper class, which skips
    # itself; runtests.py does not report those skips either.
    cls = getattr(item, "cls", None)
    return cls is not None and cls.__qualname__.startswith("abstract_base_test.")


def pytest_collection_modifyitems(config, items):
    dropped = [item for item in items if abstract(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not abstract(item)]
"""

# Tornado runs its tests with unittest and has no pytest settings: this
# makes the copy pytest's rootdir (not tokioloop's checkout above it).
# Unittest classes: pytest-asyncio (installed) has nothing to run.
PYTEST_INI = """\
[pytest]
addopts = -p no:asyncio
timeout = 60
filterwarnings = ignore::pytest.PytestCollectionWarning
"""

LOOP_CHECK = f"""\
import asyncio
import os

from tornado.ioloop import IOLoop
from tornado.testing import AsyncTestCase, gen_test

EXPECTED = os.environ["{policy_suite.VAR}"]


def kind(loop):
    return type(loop).__module__.split(".")[0]


class IOLoopCheckTest(AsyncTestCase):
    def test_current_ioloop(self):
        self.assertIs(IOLoop.current(), self.io_loop)
        self.assertEqual(kind(IOLoop.current().asyncio_loop), EXPECTED)

    @gen_test
    async def test_running_loop(self):
        self.assertIs(asyncio.get_running_loop(), self.io_loop.asyncio_loop)
        self.assertEqual(kind(asyncio.get_running_loop()), EXPECTED)
"""
CHECK = "test_zz_tokioloop."

# Left out: what this machine cannot run, on either loop.
IGNORE = [
    # pycurl (libcurl's binding) is not installed: every test skips itself.
    "tornado/test/curl_httpclient_test.py",
    # Twisted is not installed: every test skips itself.
    "tornado/test/twisted_test.py",
]
DESELECT = [
    # pycurl again: these skip themselves without it.
    "tornado/test/circlerefs_test.py::CircleRefsTest::test_curl_httpclient",
    "tornado/test/circlerefs_test.py::CircleRefsTest::test_curl_httpclient_streaming_callback",
    # The venv's pycares (5.x, which aiodns wants) has no
    # Channel.gethostbyname, which tornado's CaresResolver calls: fails on
    # stock asyncio too.
    "tornado/test/netutil_test.py::CaresResolverTest",
]


def copy_installed() -> Path:
    """The installed tornado package, copied once under
    .cache/tornado-tests/ with this runner's files added."""
    version = importlib.metadata.version("tornado")
    target = sdist_suite.CACHE / "tornado-tests" / f"tornado-{version}"
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    package = Path(importlib.util.find_spec("tornado").origin).parent
    shutil.copytree(package, target / "tornado", ignore=shutil.ignore_patterns("__pycache__"))
    extra = {
        **policy_suite.plugin_files(),
        "pytest.ini": PYTEST_INI,
        "conftest.py": CONFTEST,
        "test_zz_tokioloop.py": LOOP_CHECK,
    }
    for path, text in extra.items():
        (target / path).write_text(text)
    (target / ".complete").touch()
    return target


def main() -> int:
    if importlib.util.find_spec("tornado") is None:
        print("tornado-suite needs tornado (pip install tornado)", file=sys.stderr)
        return 1
    suite = copy_installed()
    args = [
        "--tb=short",
        "-rN",
        *(f"--ignore={path}" for path in IGNORE),
        *(f"--deselect={node}" for node in DESELECT),
        "tornado/test",
        "test_zz_tokioloop.py",
        *sys.argv[1:],
    ]
    stock, ours = policy_suite.run(suite, args, CHECK)
    return policy_suite.report("tornado", stock, ours, check=CHECK)


if __name__ == "__main__":
    sys.exit(main())
