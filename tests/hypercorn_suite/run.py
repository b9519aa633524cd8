"""Hypercorn's own test suite (its asyncio side) on tokioloop, compared with
stock asyncio.

Hypercorn is an ASGI/WSGI server on asyncio streams (`start_server`, TLS,
`create_datagram_endpoint` for QUIC and its statsd logger). Its asyncio
tests drive its `TCPServer` and protocols (HTTP/1.1 through h11, HTTP/2
through h2, WebSockets through wsproto) over in-memory readers and writers
built on `asyncio.Queue`, its lifespan handling and its task group: what
they exercise of the loop is tasks and cancellation, `asyncio.wait_for`
timeouts (keep-alive, read, lifespan startup and shutdown), and, for its
WSGI and sync paths, `run_in_executor` with `run_coroutine_threadsafe`
back to the loop; one test's statsd logger sends UDP to localhost. They
run under pytest-asyncio (strict mode), which makes each test's loop with
`asyncio.Runner` from its `event_loop_policy` fixture, whose default is
the policy installed, so tests/policy_suite.py runs the suite with
tokioloop's policy installed, then its failures on stock asyncio, and counts
a test as failing only when it fails on tokioloop alone and again when
re-run alone. Only the asyncio side runs: its trio tests (marked `trio`,
among them the one end-to-end test, which binds 0.0.0.0) are deselected with
`-m "not trio"`. A check test asserts each session's loop, and serves a
request over loopback with `hypercorn.asyncio.serve` (real sockets, which
the suite's own tests do not use), the app answering with the loop it runs
on.

    python tests/hypercorn_suite/run.py [pytest args...]

The tests (and Hypercorn's pytest settings, its pyproject.toml) are those
of the installed hypercorn's version, fetched as tests/sdist_suite.py
describes. Its test dependencies must be installed: pytest-asyncio, trio
and pytest-trio (its test modules import trio, and pytest-trio registers
the `trio` marker that its `--strict-markers` wants), httpx (imported by
its trio end-to-end test's module). Its settings lose pytest-cov's option
(not installed) and `--showlocals` (noise), and gain pytest-timeout's limit
per test and pytest-asyncio's fixture loop scope (its fixtures are all
function-scoped; unset, it warns). About 180 tests a session, under 10 s
each on 2 cores.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy_suite  # tests/ is not a package: imported by path
import sdist_suite

# Hypercorn's pytest settings, for the first run and the re-runs alike.
PYPROJECT_EDITS = [
    (
        'addopts = "--no-cov-on-fail --showlocals --strict-markers"\n',
        (
            'addopts = "--strict-markers"\ntimeout = 60\n'
            'asyncio_default_fixture_loop_scope = "function"\n'
        ),
    ),
]

LOOP_CHECK = f"""\
import asyncio
import os
import socket

import pytest

from hypercorn.asyncio import serve
from hypercorn.config import Config

EXPECTED = os.environ["{policy_suite.VAR}"]


def kind(loop):
    return type(loop).__module__.split(".")[0]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            elif message["type"] == "lifespan.shutdown":
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    body = kind(asyncio.get_running_loop()).encode()
    headers = [(b"content-length", b"%d" % len(body))]
    await send({{"type": "http.response.start", "status": 200, "headers": headers}})
    await send({{"type": "http.response.body", "body": body}})


@pytest.mark.asyncio
async def test_serve():
    assert kind(asyncio.get_running_loop()) == EXPECTED
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{{port}}"]
    shutdown = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=shutdown.wait))
    try:
        for _ in range(200):  # until it listens
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("hypercorn did not listen")
        writer.write(b"GET / HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n")
        response = await reader.read()  # until the server closes
        writer.close()
        await writer.wait_closed()
    finally:
        shutdown.set()
        await asyncio.wait_for(server, 10)
    assert response.startswith(b"HTTP/1.1 200")
    assert response.endswith(EXPECTED.encode())
"""
CHECK = "tests.test_zz_tokioloop::"


def deselected() -> list[str]:
    """Not run: they fail on stock asyncio too, here."""
    tests = []
    h2 = tuple(int(p) for p in importlib.metadata.version("h2").split(".")[:2])
    if h2 >= (4, 4):
        # Its h2 client sends CONNECT with :scheme and :path but no
        # :protocol, which h2 4.4 rejects (RFC 9113 8.3) before the server
        # sees a byte.
        tests.append("tests/asyncio/test_sanity.py::test_http2_websocket")
    return tests


def main() -> int:
    if not sdist_suite.installed("hypercorn"):
        return 1
    suite = sdist_suite.fetch(
        "hypercorn",
        importlib.metadata.version("hypercorn"),
        keep=sdist_suite.tests_and_settings,
        edits={"pyproject.toml": PYPROJECT_EDITS},
        extra={**policy_suite.plugin_files(), "tests/test_zz_tokioloop.py": LOOP_CHECK},
    )
    args = [
        "--tb=short",
        "-rN",
        "-m",
        "not trio",
        *(f"--deselect={t}" for t in deselected()),
        "tests",
        *sys.argv[1:],
    ]
    stock, ours = policy_suite.run(suite, args, CHECK)
    return policy_suite.report("hypercorn", stock, ours, check=CHECK)


if __name__ == "__main__":
    sys.exit(main())
