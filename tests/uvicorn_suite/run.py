"""uvicorn's own test suite with tokioloop as the loop.

uvicorn's async tests run under anyio's pytest plugin on the "asyncio"
backend, and start real servers (h11, httptools, websockets and wsproto
protocols, TLS, lifespan, Unix sockets, shutdown) inside the test's loop.
This runner gives that backend tokioloop's loop factory and runs the
suite; every test must pass (a failure counts only if it fails again when
re-run alone).

    python tests/uvicorn_suite/run.py [pytest args...]

The tests (and uvicorn's pytest settings, its pyproject.toml) are those of
the installed uvicorn's version, fetched as tests/sdist_suite.py describes;
uvicorn's test dependencies must be installed (see scripts/test.sh). Tests
that start their own server process or `Server.run()` pick their loop
from uvicorn's `--loop` setting, not from here.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sdist_suite  # tests/ is not a package: imported by path

CONFTEST_EDITS = [
    (
        """def anyio_backend() -> str:
    return "asyncio"
""",
        """def anyio_backend():
    import tokioloop

    return ("asyncio", {"loop_factory": tokioloop.new_event_loop})
""",
    ),
]

# A test that checks the anyio backend really is tokioloop's.
LOOP_CHECK = """\
import asyncio

import pytest

pytestmark = pytest.mark.anyio


async def test_runs_on_tokioloop():
    assert type(asyncio.get_running_loop()).__module__.startswith("tokioloop")
"""


def main() -> int:
    suite = sdist_suite.fetch(
        "uvicorn",
        importlib.metadata.version("uvicorn"),
        keep=sdist_suite.tests_and_settings,
        edits={"tests/conftest.py": CONFTEST_EDITS},
        extra={"tests/test_zz_tokioloop.py": LOOP_CHECK},
    )
    # Not its xdist (-n 8) nor the benchmarks (pytest-codspeed); anyio's
    # plugin runs the async tests, not pytest-asyncio (installed for
    # tests/integration).
    args = [
        "-o",
        "addopts=",
        "-p",
        "no:asyncio",
        "--tb=short",
        "-rN",
        "--ignore=tests/benchmarks",
        "tests",
    ]
    run = sdist_suite.pytest_run(suite, [*args, *sys.argv[1:]], recheck=sdist_suite.failures)
    print(
        f"uvicorn-suite on tokioloop: {run.count('passed')} passed, "
        f"{run.count('skipped')} skipped, {len(run.flaky)} flaky, {len(run.failed)} failed"
    )
    run.report()
    if run.results.get("tests.test_zz_tokioloop::test_runs_on_tokioloop") != "passed":
        print("the suite did not run on tokioloop", file=sys.stderr)
        return 1
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
