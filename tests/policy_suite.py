"""Another project's tests on tokioloop, and its failures on stock asyncio,
through asyncio's event loop policy: what tests/websockets_suite/ and
tests/pytest_asyncio_suite/ share (on top of tests/sdist_suite.py).

Where a project's tests make their loops through the policy (plain
`asyncio.new_event_loop()`, `asyncio.Runner` and unittest's
`IsolatedAsyncioTestCase` without a loop factory, pytest-asyncio's default
`event_loop_policy` fixture), installing `tokioloop.EventLoopPolicy` routes
them all to tokioloop without editing a test. A small pytest plugin
(`PLUGIN`, written into the suite, loaded through PYTEST_PLUGINS so that
pytester's nested sessions, in-process or not, load it too) installs it at
`pytest_configure` when TOKIOLOOP_SUITE_LOOP is "tokioloop"; when it is
"asyncio" the plugin does nothing, so both sessions load the same plugins.

The check is differential, and the stock side is run only where it
decides something: the whole suite runs on tokioloop; its failures, and
the suite's check tests, are then run on stock asyncio, on their own. A
test counts as tokioloop's failure only if it fails on tokioloop, passed
or was skipped on stock, and fails again when re-run alone (on
tokioloop). Running only those few on stock halves the suites' share of
CI's time limit; the price is that stock asyncio's own counts for the
whole suite are not printed. A suite's check tests (reading
TOKIOLOOP_SUITE_LOOP) must pass in both sessions, so a session that
silently ran on the wrong loop fails the run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import sdist_suite

VAR = "TOKIOLOOP_SUITE_LOOP"
STOCK, OURS = "asyncio", "tokioloop"
PLUGIN_MODULE = "tokioloop_suite_policy"

PLUGIN = f'''\
"""Installs tokioloop's event loop policy when {VAR}=tokioloop (written
here by tokioloop's tests/policy_suite.py)."""

import asyncio
import os
import warnings


def pytest_configure(config):
    if os.environ.get("{VAR}") != "tokioloop":
        return
    import tokioloop

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.14+
        if not isinstance(asyncio.get_event_loop_policy(), tokioloop.EventLoopPolicy):
            asyncio.set_event_loop_policy(tokioloop.EventLoopPolicy())
'''


def plugin_files() -> dict[str, str]:
    """The `extra` for `sdist_suite.fetch`/`unpack`: the plugin, at the
    suite's top (which `run` puts on PYTHONPATH)."""
    return {f"{PLUGIN_MODULE}.py": PLUGIN}


def bare_suite_files(check_path: str, check: str) -> dict[str, str]:
    """The `extra` for a project that keeps no pytest settings: the plugin,
    the check test at `check_path`, and an empty pytest.ini, which makes
    the suite's top pytest's rootdir (test ids "tests.test_x...") instead
    of a parent folder's settings (this repository's)."""
    return {**plugin_files(), check_path: check, "pytest.ini": "[pytest]\n"}


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set, for the pytest processes started
    meanwhile."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run(
    suite: Path,
    args: list[str],
    check: str,
    pythonpath: Sequence[Path] = (),
    env: dict[str, str] | None = None,
) -> tuple[sdist_suite.Run, sdist_suite.Run]:
    """pytest `args` in `suite` on tokioloop, then the failures and the
    check tests (ids starting with `check`) alone on stock asyncio, with the
    plugin loaded and `pythonpath` after the suite's top on PYTHONPATH:
    (stock run, tokioloop run). The tokioloop failures that passed or were
    skipped on stock are re-run alone (see the module docstring)."""
    paths = [str(suite), *map(str, pythonpath), os.environ.get("PYTHONPATH", "")]
    common = {
        **(env or {}),
        "PYTHONPATH": os.pathsep.join(filter(None, paths)),
        "PYTEST_PLUGINS": PLUGIN_MODULE,
    }
    with environment({**common, VAR: OURS}):
        ours = sdist_suite.pytest_run(suite, args)
    failed = sdist_suite.failures(ours.results)
    checks = [t for t in ours.results if t.startswith(check)]
    with environment({**common, VAR: STOCK}):
        stock = sdist_suite.Run(sdist_suite.pytest_nodes(suite, args, failed + checks))
    suspects = [t for t in failed if stock.results.get(t) in ("passed", "skipped")]
    with environment({**common, VAR: OURS}):
        sdist_suite.recheck_alone(suite, args, ours, suspects)
    return stock, ours


def report(project: str, stock: sdist_suite.Run, ours: sdist_suite.Run, check: str) -> int:
    """Prints both sessions' counts and tokioloop's failures; the exit code:
    1 if a test fails only on tokioloop or a check test (id starting with
    `check`) did not pass in both sessions, else 0."""

    def counts(run: sdist_suite.Run) -> str:
        return ", ".join(f"{run.count(o)} {o}" for o in ("passed", "skipped", "failed"))

    both = ours.count("failed") - len(ours.flaky) - len(ours.failed)
    print(f"{project}-suite on tokioloop: {counts(ours)}")
    print(
        f"{project}-suite: tokioloop's failures and the loop check on stock asyncio: "
        f"{counts(stock)}; {both} fail on stock asyncio too, {len(ours.flaky)} passed "
        f"when re-run alone; failing only on tokioloop: {len(ours.failed)}"
    )
    ours.report()
    for name, run in ((STOCK, stock), (OURS, ours)):
        checks = [o for t, o in run.results.items() if t.startswith(check)]
        if not checks or set(checks) != {"passed"}:
            print(f"{project}-suite: the {name} session's loop check failed", file=sys.stderr)
            return 1
    return 1 if ours.failed else 0
