"""aiofiles' own test suite on tokioloop, compared with stock asyncio.

aiofiles runs blocking file and os calls in the running loop's executor
(`loop.run_in_executor(None, ...)`, the loop's default executor unless one
is given): open/read/write/seek/close on binary and text files, stdio,
temporary files and directories, `os` and `os.path` functions, `sendfile`
from a file to a file and to a socket (`writer.transport.get_extra_info(
"socket")`), and small file servers on asyncio streams (`start_server`,
`open_connection`), one of which checks that a slow `open` in the executor
leaves the loop free to serve another client meanwhile. Its tests run under
pytest-asyncio (auto mode), which makes each test's loop with
`asyncio.Runner` from its `event_loop_policy` fixture, whose default is
the policy installed, so tests/policy_suite.py runs the suite with
tokioloop's policy installed, then its failures on stock asyncio, and counts
a test as failing only when it fails on tokioloop alone and again when
re-run alone. A check test asserts each session's loop, and that aiofiles'
file I/O went through that loop's default executor.

    python tests/aiofiles_suite/run.py [pytest args...]

The tests (and aiofiles' pytest settings, its pyproject.toml) are those of
the installed aiofiles' version, fetched as tests/sdist_suite.py
describes; its one test dependency is pytest-asyncio. Edits: its servers
listen on 127.0.0.1 instead of every interface, one on a free port instead
of the fixed 30001, and its settings gain pytest-timeout's limit per test.
About 220 tests a session, a few seconds each on 2 cores.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy_suite  # tests/ is not a package: imported by path
import sdist_suite

# Servers on loopback only: `start_server(..., port=...)` without a host
# listens on every interface.
LOOPBACK = [
    (
        "asyncio.start_server(serve_file, port=unused_tcp_port)",
        'asyncio.start_server(serve_file, host="127.0.0.1", port=unused_tcp_port)',
    )
]
SLOW_FILE_DOC = '    """Monkey patch open and file.read(), and assert the loop still works."""\n'
EDITS = {
    # aiofiles' pytest settings, for the first run and the re-runs alike:
    # pytest-timeout's limit per test.
    "pyproject.toml": [
        (
            'asyncio_default_fixture_loop_scope = "function"\n',
            'asyncio_default_fixture_loop_scope = "function"\ntimeout = 60\n',
        )
    ],
    "tests/test_simple.py": LOOPBACK,
    "tests/test_os.py": LOOPBACK,
    "tests/threadpool/test_concurrency.py": [
        *LOOPBACK,
        # Its second server's fixed port, 30001: a free one instead.
        (
            "test_slow_file(monkeypatch, unused_tcp_port):",
            "test_slow_file(monkeypatch, unused_tcp_port, unused_tcp_port_factory):",
        ),
        (SLOW_FILE_DOC, SLOW_FILE_DOC + "    spam_port = unused_tcp_port_factory()\n"),
        (
            "asyncio.start_server(return_one, port=30001)",
            'asyncio.start_server(return_one, host="127.0.0.1", port=spam_port)',
        ),
        (
            'open_connection("127.0.0.1", port=30001)',
            'open_connection("127.0.0.1", port=spam_port)',
        ),
    ],
}

LOOP_CHECK = f"""\
import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import aiofiles

EXPECTED = os.environ["{policy_suite.VAR}"]


def kind(loop):
    return type(loop).__module__.split(".")[0]


class CountingExecutor(ThreadPoolExecutor):
    submitted = 0

    def submit(self, *args, **kwargs):
        self.submitted += 1
        return super().submit(*args, **kwargs)


async def test_loop(tmp_path):
    loop = asyncio.get_running_loop()
    assert kind(loop) == EXPECTED
    executor = CountingExecutor(max_workers=2)
    loop.set_default_executor(executor)
    path = tmp_path / "file.txt"
    async with aiofiles.open(path, "w") as f:
        await f.write(EXPECTED)
    async with aiofiles.open(path) as f:
        assert await f.read() == EXPECTED
    assert executor.submitted >= 6  # open, write, close; open, read, close
"""
CHECK = "tests.test_zz_tokioloop::"

# Not run: they fail on stock asyncio too, here.
DESELECT = []
if os.geteuid() == 0:
    # Expects os.access to deny what chmod took away; root is allowed.
    DESELECT.append("tests/test_os.py::test_access")


def main() -> int:
    if not sdist_suite.installed("aiofiles"):
        return 1
    suite = sdist_suite.fetch(
        "aiofiles",
        importlib.metadata.version("aiofiles"),
        keep=sdist_suite.tests_and_settings,
        edits=EDITS,
        extra={**policy_suite.plugin_files(), "tests/test_zz_tokioloop.py": LOOP_CHECK},
    )
    args = ["--tb=short", "-rN", *(f"--deselect={t}" for t in DESELECT), "tests", *sys.argv[1:]]
    stock, ours = policy_suite.run(suite, args, CHECK)
    return policy_suite.report("aiofiles", stock, ours, check=CHECK)


if __name__ == "__main__":
    sys.exit(main())
