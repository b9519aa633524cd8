"""pyzmq's own tests of its asyncio and Tornado integration on tokioloop,
compared with stock asyncio.

zmq.asyncio (and zmq.eventloop.future, its Tornado twin) turns ZeroMQ's
edge-triggered notification fd into awaitable sends, receives and polls:
`loop.add_reader`/`remove_reader` on that fd, futures resolved (and
cancelled) from the reader's callback, `call_later` timers for
RCVTIMEO/SNDTIMEO and `Poller.poll(timeout)` and, with no delay, to
re-check a socket's events after an edge. The tests run here are those
touching a loop: tests/test_asyncio.py (zmq.asyncio sockets and pollers,
several loops in turn, a forked child that leaves its context and socket
to exit's cleanup), tests/test_future.py (zmq.eventloop.future on
Tornado's `IOLoop`), tests/test_zmqstream.py and tests/test_ioloop.py
(`ZMQStream` callbacks on Tornado's `IOLoop`), tests/test_monitor.py
(socket monitors, sync and asyncio) and tests/test_auth.py (ZAP
authenticators, in a thread and as an asyncio task); every socket is on
inproc or loopback TCP (tests/test_monitor.py binds the fixed port 6666).
The rest of pyzmq's suite is loop-free (libzmq's socket options, messages,
devices, ...) and not run: it would add about 40 s a session for nothing
compared, and its tests/test_log.py races libzmq's PUB/SUB subscriptions
(a message logged before a subscription arrives is dropped, and the test
waits for it until its 60 s alarm), failing at random, on either loop.
Loops: the async tests run under pytest-asyncio (auto mode), which makes
each test's loop with `asyncio.Runner` from its `event_loop_policy`
fixture, whose default is the policy installed; the rest that use a loop
call `asyncio.new_event_loop()` or make a Tornado `IOLoop`, whose asyncio
loop comes from `asyncio.new_event_loop()` too. So tests/policy_suite.py
runs them with tokioloop's policy installed, then their failures on stock
asyncio, and counts a test as failing only when it fails on tokioloop alone
and again when re-run alone. A check test asserts each session's loop
(pytest-asyncio's and Tornado's) and a zmq.asyncio receive woken through the
reader on zmq's fd.

    python tests/pyzmq_suite/run.py [pytest args...]

The tests and pyzmq's pytest settings (pytest.ini) come from pyzmq's sdist
(pinned below, the version installed), downloaded from PyPI and checked
against its SHA-256 (`pip download` would build its C extension, CMake
included); they run against the installed pyzmq. Needs pyzmq, tornado,
pytest-asyncio and pytest-timeout. The settings lose `--durations` (noise)
and gain pytest-timeout's limit per test. About 90 tests a session, under
10 seconds each.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy_suite  # tests/ is not a package: imported by path
import sdist_suite

VERSION = "27.3.0"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/e2/e1/"
    "ea46ab0d707219c098065a37d2add5b53d3b124241aa19429bcd0863e5b4/pyzmq-27.3.0.tar.gz"
)
SDIST_SHA256 = "bbedb3d1d99babc625f1dd9d7438acefd442b36b75073fd6bc1ef7c0a4b96d56"

# The tests that touch a loop (see the module docstring), and the check.
TESTS = [
    "tests/test_asyncio.py",
    "tests/test_future.py",
    "tests/test_zmqstream.py",
    "tests/test_ioloop.py",
    "tests/test_monitor.py",
    "tests/test_auth.py",
    "tests/test_zz_tokioloop.py",
]

PYTEST_INI_EDITS = [
    # --durations: noise. pytest-timeout (installed): a limit per test, so
    # that a hang fails one test rather than the session.
    (
        "addopts = --durations 10 --import-mode=importlib\n",
        "addopts = --import-mode=importlib\ntimeout = 60\n",
    ),
]

LOOP_CHECK = f"""\
import asyncio
import os

import pytest
from tornado.ioloop import IOLoop

import zmq
import zmq.asyncio

EXPECTED = os.environ["{policy_suite.VAR}"]


def kind(loop):
    return type(loop).__module__.split(".")[0]


@pytest.fixture
def Context():
    return zmq.asyncio.Context


async def test_loop(push_pull):
    loop = asyncio.get_running_loop()
    assert kind(loop) == EXPECTED
    push, pull = push_pull
    # The receive waits first: only the reader on zmq's fd wakes it.
    received = asyncio.ensure_future(pull.recv())
    await asyncio.sleep(0.1)
    assert not received.done()
    await push.send(b"ping")
    assert await asyncio.wait_for(received, 10) == b"ping"


def test_tornado_loop():
    io_loop = IOLoop(make_current=False)
    try:
        assert kind(io_loop.asyncio_loop) == EXPECTED
    finally:
        io_loop.close()
"""
CHECK = "tests.test_zz_tokioloop::"


def keep(path: str) -> bool:
    """The tests and pyzmq's pytest settings."""
    return path.startswith("tests/") or path == "pytest.ini"


def main() -> int:
    if importlib.util.find_spec("zmq") is None or importlib.metadata.version("pyzmq") != VERSION:
        print(f"pyzmq-suite needs pyzmq=={VERSION} installed", file=sys.stderr)
        return 1
    for needed in ("tornado", "pytest_asyncio"):
        if importlib.util.find_spec(needed) is None:
            # tests/test_future.py imports tornado (or both runs would lose
            # it), and the async tests need pytest-asyncio.
            print(f"pyzmq-suite needs {needed} installed", file=sys.stderr)
            return 1
    suite = sdist_suite.fetch_url(
        "pyzmq",
        VERSION,
        SDIST_URL,
        SDIST_SHA256,
        keep=keep,
        edits={"pytest.ini": PYTEST_INI_EDITS},
        extra={**policy_suite.plugin_files(), "tests/test_zz_tokioloop.py": LOOP_CHECK},
    )
    args = ["--tb=short", "-rN", *TESTS, *sys.argv[1:]]
    stock, ours = policy_suite.run(suite, args, CHECK)
    return policy_suite.report("pyzmq", stock, ours, check=CHECK)


if __name__ == "__main__":
    sys.exit(main())
