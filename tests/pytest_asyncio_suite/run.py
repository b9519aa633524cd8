"""pytest-asyncio's own test suite with tokioloop as the loop, compared with
stock asyncio.

pytest-asyncio makes every test's loop with `asyncio.Runner`, from the loop
factory of its `pytest_asyncio_loop_factories` hook when a conftest
implements one, else from the `event_loop_policy` fixture, whose default is
the policy installed when it runs. So installing tokioloop's policy routes
the whole suite to tokioloop without editing a test: its own async tests
and docs examples, and the nested pytest sessions most of its tests run
with pytester, in-process or in a subprocess (tests/policy_suite.py's
plugin, loaded in those too). Tests that bring their own loop (a
loop-factory hook or a policy of their own) keep it, on both runs; they
test pytest-asyncio's plumbing, which must work with tokioloop's policy
installed all the same. Check tests assert the loop
of each session, of an in-process and of a subprocess pytester session.

    python tests/pytest_asyncio_suite/run.py [pytest args...]

The tests (and pytest-asyncio's pytest settings, its pyproject.toml) are
those of the installed pytest-asyncio's version, fetched as
tests/sdist_suite.py describes; its test dependency is hypothesis.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy_suite  # tests/ is not a package: imported by path
import sdist_suite

# pytester's sessions run each test's nested session after snapshotting
# sys.modules and drop what it imported: the hypothesis plugin's terminal
# summary imported hypothesis (about 1 s) in every one of them. Imported
# once here, it stays.
CONFTEST_EDITS = [
    (
        'pytest_plugins = "pytester"\n',
        'import hypothesis  # noqa: F401\n\npytest_plugins = "pytester"\n',
    ),
]
# A time limit per test, in its settings so that the re-runs have it too.
SETTINGS_EDITS = [('asyncio_mode = "auto"\n', 'asyncio_mode = "auto"\ntimeout = 60\n')]

LOOP_CHECK = f"""\
import asyncio
import os

import pytest

EXPECTED = os.environ["{policy_suite.VAR}"]

NESTED = f'''
import asyncio

async def test_loop():
    assert type(asyncio.get_running_loop()).__module__.split(".")[0] == {{EXPECTED!r}}
'''


async def test_loop():
    assert type(asyncio.get_running_loop()).__module__.split(".")[0] == EXPECTED


@pytest.mark.parametrize("how", ["inprocess", "subprocess"])
def test_pytester_loop(pytester, how):
    pytester.makepyfile(NESTED)
    run = getattr(pytester, f"runpytest_{{how}}")
    result = run("--asyncio-mode=auto", "-o", "asyncio_default_fixture_loop_scope=function")
    result.assert_outcomes(passed=1)
"""
CHECK = "tests.test_zz_tokioloop::"


def keep(path: str) -> bool:
    """Its tests, the docs' example tests and its pytest settings."""
    return path.startswith(("tests/", "docs/")) or path == "pyproject.toml"


def main() -> int:
    suite = sdist_suite.fetch(
        "pytest-asyncio",
        importlib.metadata.version("pytest-asyncio"),
        keep=keep,
        edits={"tests/conftest.py": CONFTEST_EDITS, "pyproject.toml": SETTINGS_EDITS},
        extra={**policy_suite.plugin_files(), "tests/test_zz_tokioloop.py": LOOP_CHECK},
    )
    args = ["-rN", "docs", "tests", *sys.argv[1:]]
    stock, ours = policy_suite.run(suite, args, CHECK, CHECK)
    return policy_suite.report("pytest-asyncio", stock, ours, check=CHECK)


if __name__ == "__main__":
    sys.exit(main())
