"""janus' own test suite on tokioloop, compared with stock asyncio.

janus is a queue with a synchronous face for threads and an asynchronous
one for the loop's tasks. Whatever a thread does to it (put, get,
task_done, shutdown) reaches the loop's waiters through
`loop.call_soon_threadsafe`, which creates a task on the loop to notify an
`asyncio.Condition` under an `asyncio.Lock`; the loop's side wakes
threads through `threading.Condition`. Its tests drive both faces at once:
threads from the loop's default executor (`run_in_executor(None, ...)`)
and from a `ThreadPoolExecutor`, with waits bounded by `asyncio.wait_for`,
cancellations, `asyncio.sleep` and `is_closed()` checks of the bound
loop. The tests run under pytest-asyncio (strict mode), which makes each
test's loop with `asyncio.Runner` from its `event_loop_policy` fixture,
whose default is the policy installed; tests/test_benchmarks.py's own
`asyncio.Runner(debug=True)` (no loop factory) and the loop one test makes
with `asyncio.new_event_loop()` come from the policy too. So
tests/policy_suite.py runs the suite with tokioloop's policy installed, then
its failures on stock asyncio, and counts a test as failing only when it
fails on tokioloop alone and again when re-run alone. Check tests assert
each session's loop (pytest-asyncio's and a bare `asyncio.Runner`'s) and a
waiting `async_q.get()` woken by a thread's `sync_q.put()`.

    python tests/janus_suite/run.py [pytest args...]

The tests and janus' pytest settings (setup.cfg's [tool:pytest]) come
from janus' sdist (pinned below, the version installed), fetched as
tests/sdist_suite.py describes; they run against the installed janus.
Needs janus, pytest-asyncio and pytest-timeout. The settings keep janus'
`filterwarnings = error`, lose pytest-cov's options (not installed) and
gain pytest-timeout's limit per test. tests/test_benchmarks.py's
`benchmark` fixture (pytest-benchmark's or pytest-codspeed's, neither
installed for this) is a conftest's that runs the benchmarked function
once, as those plugins do when not measuring. About 100 tests a session,
a few seconds each.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy_suite  # tests/ is not a package: imported by path
import sdist_suite

VERSION = "2.0.0"

SETUP_CFG_EDITS = [
    # pytest-cov is not installed. pytest-timeout (installed): a limit per
    # test, so that a hang fails one test rather than the session.
    ("addopts = --cov-branch --cov-report xml\n", "timeout = 60\n"),
]

# janus' sdist has no conftest.py.
CONFTEST = '''\
"""The `benchmark` fixture of tests/test_benchmarks.py (written here by
tokioloop's tests/janus_suite/run.py): runs the function once."""

import pytest


@pytest.fixture
def benchmark():
    def run(func, *args, **kwargs):
        return func(*args, **kwargs)

    return run
'''

LOOP_CHECK = f"""\
import asyncio
import os
import threading

import pytest

import janus

EXPECTED = os.environ["{policy_suite.VAR}"]


def kind(loop):
    return type(loop).__module__.split(".")[0]


@pytest.mark.asyncio
async def test_loop():
    assert kind(asyncio.get_running_loop()) == EXPECTED
    q = janus.Queue()
    # The get waits first: a thread's put wakes it (call_soon_threadsafe).
    got = asyncio.ensure_future(q.async_q.get())
    await asyncio.sleep(0.01)
    assert not got.done()
    thread = threading.Thread(target=q.sync_q.put, args=("ping",))
    thread.start()
    assert await asyncio.wait_for(got, 10) == "ping"
    thread.join()
    await q.aclose()


def test_runner_loop():
    with asyncio.Runner(debug=True) as runner:
        assert kind(runner.get_loop()) == EXPECTED
"""
CHECK = "tests.test_zz_tokioloop::"


def keep(path: str) -> bool:
    """The tests and janus' pytest settings."""
    return path.startswith("tests/") or path == "setup.cfg"


def main() -> int:
    if not sdist_suite.installed("janus", VERSION):
        return 1
    if importlib.util.find_spec("pytest_asyncio") is None:
        print("janus-suite needs pytest-asyncio installed", file=sys.stderr)
        return 1
    suite = sdist_suite.fetch(
        "janus",
        VERSION,
        keep=keep,
        edits={"setup.cfg": SETUP_CFG_EDITS},
        extra={
            **policy_suite.plugin_files(),
            "tests/conftest.py": CONFTEST,
            "tests/test_zz_tokioloop.py": LOOP_CHECK,
        },
    )
    args = ["--tb=short", "-rN", "tests", *sys.argv[1:]]
    stock, ours = policy_suite.run(suite, args, CHECK)
    return policy_suite.report("janus", stock, ours, check=CHECK)


if __name__ == "__main__":
    sys.exit(main())
